"""A fake Klaviyo REST API on 127.0.0.1, for tests and benchmarks.

Standard library only.  ``FakeKlaviyo`` serves a deterministic, synthetic account (metrics,
profiles, events, campaigns, campaign messages, campaign-values reports) following the
revision 2026-07-15 OpenAPI slices in shared/klaviyo-openapi/apis/ and the checklist in
shared/klaviyo-api.md section 9.  Tests read its public ground truth (``event_ids``, ``attribution``,
``campaign_statistics``, ``request_log`` ...), never its private attributes.

Layout: ``data`` (ids, datetimes, catalogs), ``errors`` (JSON:API error bodies), ``filters``
(the filter language), ``jsonapi`` (query parameters, fieldsets, cursors, links), ``hosting``
(server, pipeline, routes, scopes, faults, rate limits, ``RecordingServer``), ``resources/*``
(one module per resource family) and ``account`` (``FakeKlaviyo``, composing them).

Run ``python -m klaviyo_sync.fake --port 0`` to serve from the command line.
"""

from .account import FakeKlaviyo
from .hosting import ALL_SCOPES, FAKE_API_KEY, RecordingServer, Route

__all__ = ["ALL_SCOPES", "FAKE_API_KEY", "FakeKlaviyo", "RecordingServer", "Route"]
