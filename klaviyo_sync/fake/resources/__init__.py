"""Resource families of the fake account, one mixin class per module.

A family is a subclass of ``Resource`` holding:

* ``ROUTES``: its endpoints, as ``hosting.Route`` rows (method, path pattern, handler method name,
  rate tier, required scope);
* ``build(self)``: its data build step, called once per construction in the order of
  ``account.RESOURCES`` (a family may read what earlier ones built);
* its handlers (``_h_*``), called as ``handler(ctx, *path_params)``;
* its public ground-truth methods, which tests compare the synced database with;
* ``OPTIONS``: the FakeKlaviyo keywords it reads (e.g. ``{"n_images": 130}``).

A list endpoint is a ``listing.ListEndpoint`` (paging, cursors, fieldsets, filters, sort,
includes): a family declares one and hands it its rows. account.py finds every family here.
"""

from __future__ import annotations

from ..hosting import Route


class Resource:
    ROUTES: tuple[Route, ...] = ()
    OPTIONS: dict = {}  # constructor keywords of FakeKlaviyo this family reads, with their defaults

    def build(self) -> None:
        """Build this family's data (deterministic from the constructor arguments)."""

    def _cache_list(self, key, size):
        """A per-(resource, base URL, fieldset) list of cached JSON texts, ``size`` long."""
        c = self._json_cache.get(key)
        if c is None:
            if len(self._json_cache) > 64:
                self._json_cache.clear()
            c = self._json_cache[key] = [None] * size
        return c
