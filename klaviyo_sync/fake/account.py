"""``FakeKlaviyo``: the hosting of ``hosting.FakeServer`` composed with the resource families.

To add a family: write ``resources/<family>.py`` with a ``Resource`` subclass (its ``ROUTES``,
``build``, handlers, ground truth, and ``OPTIONS``: its constructor keywords with defaults, e.g.
``{"n_images": 130}``). Nothing else: the families below are built first, in this order (later
ones read what they built); every other ``Resource`` subclass of ``resources/`` is found and
built after them, in the order of its module's name.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from .hosting import FAKE_API_KEY, FakeServer
from .resources.aggregates import AggregatesResource
from .resources.attribution import AttributionResource
from .resources.audience import AudienceResource
from .resources.campaigns import CampaignsResource
from .resources.events import EventsResource
from .resources.flow_reports import FlowReportsResource
from .resources.flows import FlowsResource
from .resources.metrics import MetricsResource
from .resources.profiles import ProfilesResource
from .resources.reports import ReportsResource

from . import resources as _resources

# Build order: a family may use what the families before it built.
CORE_RESOURCES = (MetricsResource, ProfilesResource, EventsResource, CampaignsResource, ReportsResource,
                  AudienceResource, FlowsResource, AttributionResource, FlowReportsResource,
                  AggregatesResource)


def _discovered() -> tuple:
    found = []
    for info in sorted(pkgutil.iter_modules(_resources.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{_resources.__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, _resources.Resource) and value is not _resources.Resource
                    and value.__module__ == module.__name__ and value not in CORE_RESOURCES and value not in found):
                found.append(value)
    return tuple(found)


RESOURCES = CORE_RESOURCES + _discovered()


class FakeKlaviyo(FakeServer, *RESOURCES):
    """A deterministic fake Klaviyo account served over HTTP on 127.0.0.1.

    ``account_timezone`` is the time zone report timeframes are read in; ``report_page_size``
    how many results a values report returns a page (the rest follow ``links.next``).
    ``scopes=None`` grants every scope; pass a set (or call ``revoke_scope``) to make requests
    to routes that need a missing scope fail with Klaviyo's JSON 403 ``permission_denied``.
    """

    ROUTES = tuple(r for res in RESOURCES for r in res.ROUTES)

    def __init__(self, *, api_key=FAKE_API_KEY, seed=1, n_metrics=12, n_profiles=300,
                 n_events=2000, span_hours=24 * 7, now=None, n_campaigns_per_channel=8,
                 metrics_page_size=200, n_quiet_profiles=40, n_lists=4, n_segments=3, n_flows=10,
                 host="127.0.0.1", port=0, scopes=None,
                 account_timezone="America/Los_Angeles", report_page_size=20,
                 profile_shape="small", diurnal=False, events_per_visit=1, **options):
        if not 1 <= n_metrics <= 255:
            raise ValueError("n_metrics must be in 1..255")
        if n_events < 0 or n_profiles < 0 or n_campaigns_per_channel < 0 or n_flows < 0:
            raise ValueError("counts must be >= 0")
        if now is None:
            now = datetime.now(timezone.utc).replace(microsecond=0)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        if events_per_visit < 1:
            raise ValueError("events_per_visit must be >= 1")
        self.seed = seed
        # Opt-in shape of a real account (benchmarks); the defaults are what the tests compare.
        self.profile_shape = profile_shape  # "small" (3 properties) or "realistic" (~1 KB of JSON)
        self.diurnal = diurnal  # events follow the day: busy evenings, quiet nights
        self.events_per_visit = events_per_visit  # consecutive events sharing one profile
        self.n_metrics = n_metrics
        self.n_profiles = n_profiles
        self.n_events = n_events
        self.span_hours = span_hours
        self.now = now.astimezone(timezone.utc)
        self.now_ts = int(math.floor(self.now.timestamp()))
        self.n_campaigns_per_channel = n_campaigns_per_channel
        self.metrics_page_size = metrics_page_size
        self.n_flows = n_flows
        self.n_quiet_profiles, self.n_lists, self.n_segments = n_quiet_profiles, n_lists, n_segments
        # Klaviyo reads a report's custom timeframe (and its named ones: today, last_30_days ...)
        # in the account's time zone, not UTC.
        self.account_timezone = ZoneInfo(account_timezone)
        # Values reports answer at most this many results a page, with a links.next.
        self.report_page_size = report_page_size
        # The families' own options (resources/*.py OPTIONS), e.g. n_images.
        defaults = {k: v for res in RESOURCES for k, v in res.OPTIONS.items()}
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"FakeKlaviyo: unknown option(s) {', '.join(sorted(unknown))}")
        for name, default in defaults.items():
            setattr(self, name, options.get(name, default))
        self._init_server(api_key=api_key, scopes=scopes, host=host, port=port)
        self._json_cache: dict = {}
        self._build()

    def _build(self):
        # one generator per family (seeded by name), so e.g. changing n_events leaves campaigns alone
        for res in RESOURCES:
            res.build(self)
