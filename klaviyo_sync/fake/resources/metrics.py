"""Metrics: ``GET /api/metrics`` and ``GET /api/metrics/{id}`` (shared/klaviyo-api.md 4.1)."""

from __future__ import annotations

import random

from ..data import B62, INTEGRATIONS, METRIC_CATALOG, dumps, iso
from ..errors import not_found
from ..hosting import Route
from ..jsonapi import fields_param, include_param, query_params, sparse
from ..listing import ListEndpoint
from . import Resource

METRIC_FIELDS = {"created", "id", "integration", "name", "updated"}
FLOW_FIELDS = {"archived", "created", "id", "name", "status", "trigger_type", "updated"}
METRIC_FILTERS = {
    "integration.name": {"single": ("equals",), "type": "string"},
    "integration.category": {"single": ("equals",), "type": "string"},
}


METRICS_LIST = ListEndpoint("metric", fields=frozenset(METRIC_FIELDS), filters=METRIC_FILTERS, sorts=(), page=None,
                            default_sort=None, includes={"flow-triggers": ("flow", frozenset(FLOW_FIELDS))},
                            kind="mt")


class MetricsResource(Resource):
    """The account's metrics; built first, events pick theirs from ``_metric_byte_table``."""

    ROUTES = (
        Route("GET", "/api/metrics", "_h_metrics", tier="metrics", scope="metrics:read"),
        Route("GET", "/api/metrics/{id}", "_h_metric", tier="metrics", scope="metrics:read"),
    )

    def build(self):
        seed = self.seed
        rng = random.Random(f"klaviyo-fake-{seed}-metrics")
        cat = list(METRIC_CATALOG)
        chosen = cat[: self.n_metrics]
        for k in range(len(chosen), self.n_metrics):
            chosen.append((f"Custom Event {k - len(cat) + 1}", "api", "custom", 2))
        ids = set()
        self._metrics = []
        for k, (name, integ, kind, weight) in enumerate(chosen):
            while True:
                mid = "".join(rng.choice(B62) for _ in range(6))
                if mid not in ids:
                    ids.add(mid)
                    break
            created = self.now_ts - 86400 * rng.randint(400, 1500) - rng.randrange(86400)
            updated = created + rng.randrange(86400 * 300)
            self._metrics.append({
                "id": mid, "name": name, "kind": kind, "weight": weight,
                "attributes": {"name": name, "created": iso(created), "updated": iso(updated),
                               "integration": dict(INTEGRATIONS[integ])},
            })
        self._mids = [m["id"] for m in self._metrics]
        self._mkind = [m["kind"] for m in self._metrics]
        self._metric_index = {m["id"]: k for k, m in enumerate(self._metrics)}
        self._metric_by_name = {m["name"]: m["id"] for m in self._metrics}

        # 256-entry table mapping a random byte to a metric index (weighted): events use it
        total = sum(m["weight"] for m in self._metrics)
        slots = [max(1, round(256 * m["weight"] / total)) for m in self._metrics]
        while sum(slots) > 256:
            slots[slots.index(max(slots))] -= 1
        while sum(slots) < 256:
            slots[slots.index(max(slots))] += 1
        table = bytearray()
        for k, c in enumerate(slots):
            table.extend([k] * c)
        self._metric_byte_table = bytes(table[:256])

    # ------------------------------------------------------------------ resources
    def _metric_res(self, k: int, base: str, fm) -> dict:
        m = self._metrics[k]
        ml = f"{base}/api/metrics/{m['id']}"
        return {
            "type": "metric", "id": m["id"], "attributes": sparse(m["attributes"], fm),
            "relationships": {"flow-triggers": {"links": {
                "self": f"{ml}/relationships/flow-triggers/", "related": f"{ml}/flow-triggers/"}}},
            "links": {"self": f"{ml}/"},
        }

    def _metric_json(self, k: int, base: str, fm) -> str:
        cache = self._cache_list(("m", base, tuple(fm) if fm is not None else None), len(self._metrics))
        s = cache[k]
        if s is None:
            s = cache[k] = dumps(self._metric_res(k, base, fm))
        return s

    # ------------------------------------------------------------------ ground truth
    def metric_ids(self) -> set[str]:
        return set(self._mids)

    def metric_id(self, name: str) -> str:
        return self._metric_by_name[name]

    def metric_names(self) -> dict[str, str]:
        """{metric id: name} of every metric."""
        return {m["id"]: m["name"] for m in self._metrics}

    # ------------------------------------------------------------------ handlers
    def _h_metrics(self, ctx):
        def value(k, name):
            m = self._metrics[k]
            return m["id"] if name == "id" else m["attributes"]["integration"][name.split(".", 1)[1]]

        # No page[size] and no sort: the page size is the fake's metrics_page_size (200 as at Klaviyo).
        return METRICS_LIST.respond(self, ctx, range(len(self._metrics)), value=value,
                                    size=max(1, int(self.metrics_page_size)),
                                    render=lambda k, fields: self._metric_res(k, self.base_url, fields))

    def _h_metric(self, ctx, metric_id):
        params = query_params(ctx, {"fields[metric]", "fields[flow]", "include"})
        fm = fields_param(params, "fields[metric]", METRIC_FIELDS)
        fields_param(params, "fields[flow]", FLOW_FIELDS)
        inc = include_param(params, {"flow-triggers"})
        k = self._metric_index.get(metric_id)
        if k is None:
            raise not_found(f"A metric with id '{metric_id}' does not exist.")
        r = self._metric_res(k, self.base_url, fm)
        doc = {"data": r, "links": {"self": f"{self.base_url}{ctx.path}"}}
        if inc:
            r["relationships"]["flow-triggers"]["data"] = []
            doc["included"] = []
        return 200, dumps(doc).encode("utf-8"), []
