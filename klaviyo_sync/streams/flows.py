"""Flows, their definitions (actions and messages), templates, and flow statistics.

- The flow listing is a declared stream (archived flows are hidden unless asked for, so it
  runs twice: archived and not). It is a whole pass every run: it costs one request per 50
  flows, and only a whole pass can see a flow deleted from the account (marked ``deleted_at``).
- Definitions are the incremental part: one ``GET /api/flows/{id}?additional-fields[flow]=
  definition`` for each flow whose ``updated`` moved since its definition was stored (flow
  endpoints are 3/s, 60/m: never one call per action). Each flow's actions and messages are
  replaced in one transaction, so a failed request loses nothing already stored.
- Templates: a declared stream, incremental on ``updated``, 10 a page (the API's maximum).
- Statistics: daily series reports (shared quota of 225 a day with campaign reports), up to
  100 flows and 60 days a request; a day is read again until it was read ``SETTLE`` after it
  ended, because attribution keeps moving for about 5 days. A spent quota keeps what was
  fetched and makes the run partial. Days are the account's days (Klaviyo reads the timeframe
  in the account's time zone, series.py): ``flow_stats_daily.day`` is a day of the zone the
  ``account`` table holds (UTC, with a warning, when unknown); when that zone changes, the
  stored statistics (days of another zone) are dropped and read again.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient
from ..errors import ApiError, RateLimitExceeded
from ..timeutil import Window, iso, normalize_iso, parse_range, utcnow
from .campaigns import EMAIL_COLUMNS, REPORT_STAT_COLUMNS, conversion_metric_id
from .declare import FLOWS_READ, INTEGER, TEMPLATES_READ, TEXT, Column, Declaration, TableSpec, declare, flag
from .engine import Cursor, Stream, SyncResult, Table, run_stream
from .series import day_end, fetch_series, local_days, report_zone, timeframe, value_at

REPORT_BATCH = 100  # contains-any takes at most 100 flow ids
SERIES_MAX_DAYS = 60  # a daily series may span at most 60 days
SETTLE = timedelta(days=5)  # attribution is revised for about 5 days after a send
ZONE_STATE = "flow_stats.timezone"  # the zone flow_stats_daily's days are counted in
# In sync-all (hourly under cron), a day still settling is read again once its statistics are
# this old, not on every run: the report quota (2/min, 225/day, shared with campaigns) is not spent
# on minutes-old figures. The flow commands themselves read such days on every run.
STATS_MAX_AGE = timedelta(hours=6)
SEND_CHANNEL = {"send-email": "email", "send-sms": "sms", "send-push-notification": "mobile_push",
                "send-whatsapp": "whatsapp"}
DELAY_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60}

FLOWS_TABLE = Table("flows", tuple(store.FLOW_COLUMNS), newer="updated")
DEFINITION_TABLE = Table("flows", tuple(store.FLOW_DEFINITION_COLUMNS))
ACTIONS_TABLE = Table("flow_actions", tuple(store.FLOW_ACTION_COLUMNS))
MESSAGES_TABLE = Table("flow_messages", tuple(store.FLOW_MESSAGE_COLUMNS))
TEMPLATES_TABLE = Table("templates", tuple(store.TEMPLATE_COLUMNS), newer="updated")
TEMPLATES_LEAN_TABLE = Table("templates", ("id", "name", "editor_type", "created", "updated"), newer="updated")
STATS_TABLE = Table("flow_stats_daily", tuple(store.FLOW_STAT_COLUMNS), key=("flow_message_id", "day"))
DAYS_TABLE = Table("flow_stats_days", ("flow_id", "day", "conversion_metric_id", "fetched_at"),
                   key=("flow_id", "day"))


def flow_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    archived = a.get("archived")
    return (resource["id"], a.get("name"), a.get("status"), flag(archived),
            a.get("trigger_type"), normalize_iso(a.get("created")), normalize_iso(a.get("updated")), None)


FLOWS = Stream(
    name="flows",
    path="/api/flows",
    table=FLOWS_TABLE,
    row=flow_row,
    type="flow",
    scope=FLOWS_READ,
    params={"fields[flow]": "name,status,archived,created,updated,trigger_type"},
    partitions=(("equals(archived,false)",), ("equals(archived,true)",)),
    page_size=50,
    sort="updated",
)


def template_row(resource: dict) -> tuple:
    a = resource.get("attributes") or {}
    return (resource["id"], a.get("name"), a.get("editor_type"), normalize_iso(a.get("created")),
            normalize_iso(a.get("updated")), a.get("html"), a.get("text"), a.get("amp"))


TEMPLATES = Stream(
    name="templates", path="/api/templates", table=TEMPLATES_TABLE, row=template_row,
    type="template", scope=TEMPLATES_READ, page_size=10, cursor=Cursor("updated"),
)
# --no-html: a separate stream (and mark), so a later run with bodies still reads every template.
TEMPLATES_LEAN = Stream(
    name="templates-no-html", path="/api/templates", table=TEMPLATES_LEAN_TABLE,
    row=lambda r: template_row(r)[:5], type="template", scope=TEMPLATES_READ, page_size=10,
    cursor=Cursor("updated"), params={"fields[template]": "name,editor_type,created,updated"},
)


# -- definitions ---------------------------------------------------------------------------------
def _next_ids(action: dict) -> list[str]:
    links = action.get("links") or {}
    return [v for k in ("next", "next_if_true", "next_if_false") if (v := links.get(k))]


def definition_rows(flow_id: str, updated: str | None, definition: dict) -> tuple[tuple, list, list]:
    """(flows definition row, flow_actions rows, flow_messages rows) of one flow's definition.
    An action's position is its order in a walk from the entry action (true branch first);
    actions the walk does not reach come last, in the definition's order."""
    actions = [a for a in definition.get("actions") or [] if isinstance(a, dict) and a.get("id")]
    by_id = {a["id"]: a for a in actions}
    order: list[str] = []
    stack = [definition.get("entry_action_id")]
    while stack:
        aid = stack.pop()
        if aid in by_id and aid not in order:
            order.append(aid)
            stack.extend(reversed(_next_ids(by_id[aid])))
    order += [a["id"] for a in actions if a["id"] not in order]
    action_rows, message_rows = [], []
    for pos, aid in enumerate(order, 1):
        a = by_id[aid]
        data = a.get("data") or {}
        delay_value = delay_unit = delay_seconds = None
        if a.get("type") == "time-delay":
            delay_value, delay_unit = data.get("value"), data.get("unit") or "days"
            if isinstance(delay_value, int):
                delay_seconds = delay_value * DELAY_SECONDS.get(delay_unit, 0) or None
        action_rows.append((aid, flow_id, a.get("type"), data.get("status"), pos, store.to_json(_next_ids(a)),
                            delay_value, delay_unit, delay_seconds, store.to_json(a)))
        m = data.get("message")
        if isinstance(m, dict) and m.get("id"):
            message_rows.append((m["id"], flow_id, aid, SEND_CHANNEL.get(a.get("type"), a.get("type")),
                                 m.get("name"), m.get("subject_line") or m.get("title"), m.get("preview_text"),
                                 m.get("from_email"), m.get("from_label"), m.get("template_id"), m.get("body"),
                                 store.to_json(m)))
    flow = (flow_id, updated, definition.get("entry_action_id"), store.to_json(definition.get("triggers")),
            store.to_json(definition.get("profile_filter")), store.to_json(definition.get("reentry_criteria")))
    return flow, action_rows, message_rows


def flows_needing_definitions(db: Database) -> list[tuple[str, str]]:
    return [tuple(r) for r in db.execute(
        "SELECT id, updated FROM flows WHERE deleted_at IS NULL AND "
        "(definition_updated IS NULL OR definition_updated IS NOT updated) ORDER BY id").fetchall()]


def fetch_and_save_definition(client: KlaviyoClient, db: Database, flow_id: str, result: SyncResult) -> None:
    try:
        doc = client.request("GET", f"/api/flows/{flow_id}", params={"additional-fields[flow]": "definition"}, expect="object")
    except ApiError as exc:
        if exc.status != 404:
            raise
        with db.atomic():  # deleted between the listing and this request
            db.execute("UPDATE flows SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL", [iso(utcnow()), flow_id])
        result.extra["flows_removed"] = result.extra.get("flows_removed", 0) + 1
        return
    resource = doc.get("data") or {}
    attrs = resource.get("attributes") or {}
    flow, actions, messages = definition_rows(flow_id, normalize_iso(attrs.get("updated")),
                                              attrs.get("definition") or {})
    with db.atomic():
        result.add_rows("flows", FLOWS_TABLE.write(db, [flow_row(resource)]))
        DEFINITION_TABLE.write(db, [flow])
        # The definition is the whole truth about the flow's actions: replace them.
        db.execute("DELETE FROM flow_messages WHERE flow_id = ?", [flow_id])
        db.execute("DELETE FROM flow_actions WHERE flow_id = ?", [flow_id])
        result.add_rows("flow_actions", ACTIONS_TABLE.write(db, actions))
        result.add_rows("flow_messages", MESSAGES_TABLE.write(db, messages))
    result.extra["definitions_fetched"] = result.extra.get("definitions_fetched", 0) + 1


def _mark_deleted(db: Database, seen: str) -> int:
    return db.execute(
        f"UPDATE flows SET deleted_at = ? WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM {seen})",
        [iso(utcnow())]).rowcount


def sync_flows(client: KlaviyoClient, db: Database, *, result: SyncResult | None = None) -> SyncResult:
    """Every flow (archived too), then the definition of each flow whose `updated` moved."""
    result = SyncResult.begin(result, ["flows", "flow_actions", "flow_messages"])
    result.extra.setdefault("definitions_fetched", 0)
    run_stream(client, db, FLOWS, result, on_missing=_mark_deleted)
    todo = flows_needing_definitions(db)
    result.extra["definitions_needed"] = len(todo)
    for flow_id, _ in todo:
        fetch_and_save_definition(client, db, flow_id, result)
    return result


def sync_templates(client: KlaviyoClient, db: Database, *, html: bool = True, full: bool = False,
                   result: SyncResult | None = None) -> SyncResult:
    result = SyncResult.begin(result, ["templates"])
    run_stream(client, db, TEMPLATES if html else TEMPLATES_LEAN, result, full=full)
    return result


# -- statistics -----------------------------------------------------------------------------------
def window_days(window: Window, now: datetime, zone: ZoneInfo = ZoneInfo("UTC")) -> list[date]:
    """The days (of ``zone``, the account's) a range touches, up to today there."""
    return local_days(window, zone, now)


def flow_days_needed(db: Database, days: list[date], metric_id: str, now: datetime,
                     zone: ZoneInfo = ZoneInfo("UTC"),
                     max_age: timedelta = timedelta(0)) -> dict[str, list[date]]:
    """{flow id: days of ``days`` whose statistics are missing, for another conversion metric,
    or read before the day's attribution settled and more than ``max_age`` ago}."""
    if not days:
        return {}
    flows = [r[0] for r in db.execute("SELECT id FROM flows WHERE deleted_at IS NULL ORDER BY id")]
    have = {}
    for flow_id, day, metric, fetched in db.execute(
            "SELECT flow_id, day, conversion_metric_id, fetched_at FROM flow_stats_days WHERE day >= ? AND day <= ?",
            [days[0].isoformat(), days[-1].isoformat()]):
        have[(flow_id, day)] = (metric, fetched)
    settled = {d: iso(day_end(d, zone) + SETTLE) for d in days}
    out: dict[str, list[date]] = {}
    stale = iso(now - max_age)
    for flow_id in flows:
        need = []
        for d in days:
            got = have.get((flow_id, d.isoformat()))
            if got is None or got[0] != metric_id or (got[1] < settled[d] and got[1] < stale):
                need.append(d)
        if need:
            out[flow_id] = need
    return out


def stats_requests(needed: dict[str, list[date]]) -> list[tuple[list[str], date, date]]:
    """(flow ids <= 100, first day, last day <= 60 days on): flows needing the same span share
    requests; each flow's span runs from its first to its last needed day."""
    by_span: dict[tuple[date, date], list[str]] = {}
    for flow_id, days in needed.items():
        by_span.setdefault((days[0], days[-1]), []).append(flow_id)
    # Flows with different spans are merged into the widest span when that costs no request.
    spans = sorted(by_span.items(), key=lambda kv: kv[0])
    merged: list[tuple[list[str], date, date]] = []
    for (lo, hi), ids in spans:
        if merged:
            mids, mlo, mhi = merged[-1]
            nlo, nhi = min(lo, mlo), max(hi, mhi)
            if -(-((nhi - nlo).days + 1) // SERIES_MAX_DAYS) == -(-((mhi - mlo).days + 1) // SERIES_MAX_DAYS) \
                    and len(mids) + len(ids) <= REPORT_BATCH:
                merged[-1] = (mids + ids, nlo, nhi)
                continue
        merged.append((list(ids), lo, hi))
    out = []
    for ids, lo, hi in merged:
        for i in range(0, len(ids), REPORT_BATCH):
            batch = ids[i:i + REPORT_BATCH]
            start = lo
            while start <= hi:
                end = min(hi, start + timedelta(days=SERIES_MAX_DAYS - 1))
                out.append((batch, start, end))
                start = end + timedelta(days=1)
    return out


def series_body(ids: list[str], first: date, last: date, metric_id: str, zone: ZoneInfo = ZoneInfo("UTC")) -> dict:
    quoted = ",".join(f'"{i}"' for i in ids)
    return {"data": {"type": "flow-series-report", "attributes": {
        "statistics": store.STAT_NAMES,
        # Both ends are inclusive: whole days of the account's zone (wall-clock times with the
        # zone's offset), so consecutive requests never overlap.
        "timeframe": timeframe(first, last, zone),
        "interval": "daily",
        "conversion_metric_id": metric_id,
        "group_by": ["flow_id", "flow_message_id", "send_channel"],
        "filter": f"contains-any(flow_id,[{quoted}])",
    }}}


def fetch_and_save_flow_stats(client: KlaviyoClient, db: Database, requests: list, metric_id: str,
                              result: SyncResult, now: datetime, zone: ZoneInfo = ZoneInfo("UTC")) -> None:
    fetched_at = iso(now)
    for ids, first, last in requests:
        # The i-th value is the i-th day of the timeframe (the account's days).
        span_days = (last - first).days + 1
        results, _ = fetch_series(client, "/api/flow-series-reports",
                                  series_body(ids, first, last, metric_id, zone), span_days)
        days = [(first + timedelta(days=i)).isoformat() for i in range(span_days)]
        wanted = set(ids)
        rows = []
        for r in results:
            g = r.get("groupings") or {}
            if g.get("flow_id") not in wanted or not g.get("flow_message_id"):
                continue
            st = r.get("statistics") or {}
            for i, day in enumerate(days):
                values = [value_at(st.get(name), i) for name in store.STAT_NAMES]
                if not any(values):
                    continue  # a day the message sent nothing
                rows.append((g["flow_id"], g["flow_message_id"], day, g.get("send_channel"), *values,
                             metric_id, fetched_at))
        with db.atomic():
            marks = ",".join("?" for _ in ids)
            db.execute(f"DELETE FROM flow_stats_daily WHERE flow_id IN ({marks}) AND day >= ? AND day <= ?",
                       [*ids, days[0], days[-1]])
            result.add_rows("flow_stats_daily", STATS_TABLE.write(db, rows))
            DAYS_TABLE.write(db, [(f, d, metric_id, fetched_at) for f in ids for d in days])
        result.extra["report_requests"] = result.extra.get("report_requests", 0) + 1


def sync_flow_stats(client: KlaviyoClient, db: Database, window: Window, *, conversion_metric: str | None = None,
                    now: datetime | None = None, result: SyncResult | None = None,
                    max_age: timedelta = timedelta(0)) -> SyncResult:
    """Per-day statistics of every flow for the days of ``window`` not yet read after they settled."""
    now = now or utcnow()
    result = SyncResult.begin(result, ["flow_stats_daily"], window)
    metric_id = conversion_metric_id(client, db, conversion_metric)
    zone = report_zone(db)
    result.extra["timezone"] = zone.key
    if store.get_state(db, ZONE_STATE) not in (None, zone.key):
        with db.atomic():  # days of another zone: read them again in this one
            db.execute("DELETE FROM flow_stats_daily")
            db.execute("DELETE FROM flow_stats_days")
            store.set_state(db, ZONE_STATE, zone.key)
    elif store.get_state(db, ZONE_STATE) is None:
        with db.atomic():
            store.set_state(db, ZONE_STATE, zone.key)
    days = window_days(window, now, zone)
    needed = flow_days_needed(db, days, metric_id, now, zone, max_age)
    requests = stats_requests(needed)
    result.extra["stats_requests_planned"] = len(requests)
    try:
        fetch_and_save_flow_stats(client, db, requests, metric_id, result, now, zone)
    except RateLimitExceeded as exc:
        left = flow_days_needed(db, days, metric_id, now, zone, max_age)
        missing = sum(len(v) for v in left.values())
        result.extra["stats_missing_flow_days"] = missing
        result.partial = (f"flows stored, but statistics are missing for {missing} flow-day(s) of "
                          f"{len(left)} flow(s): {exc}")
    return result


FLOWS_SPEC = TableSpec("flows", "Every flow (automation) of the account, archived and deleted ones too.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "Flow name."),
    Column("status", TEXT, "draft, manual or live."),
    Column("archived", INTEGER, "1 if archived, else 0."),
    Column("trigger_type", TEXT, "What starts the flow, e.g. Added to List, Metric."),
    Column("created", TEXT, "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("updated", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("deleted_at", TEXT, "Set when the flow left the account (UTC)."),
    Column("definition_updated", TEXT, "The flow's `updated` its definition was read at."),
    Column("entry_action_id", TEXT, "The first action: flow_actions.id."),
    Column("triggers", TEXT, "Its triggers (JSON)."),
    Column("profile_filter", TEXT, "Who may enter (JSON)."),
    Column("reentry_criteria", TEXT, "When a profile may enter again (JSON)."),
))

ACTIONS_SPEC = TableSpec("flow_actions", "The actions (steps) of each flow: sends, delays, splits.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("flow_id", TEXT, "The flow: flows.id."),
    Column("type", TEXT, "send-email, send-sms, time-delay, conditional-split, ..."),
    Column("status", TEXT, "The action's status."),
    Column("position", INTEGER, "Order in a walk from the entry action, true branch first."),
    Column("next_action_ids", TEXT, "The actions that follow (JSON)."),
    Column("delay_value", INTEGER, "A time delay's amount."),
    Column("delay_unit", TEXT, "A time delay's unit."),
    Column("delay_seconds", INTEGER, "A time delay in seconds."),
    Column("definition", TEXT, "The action as Klaviyo returned it (JSON)."),
))

MESSAGES_SPEC = TableSpec("flow_messages", "The messages sent by flow actions.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("flow_id", TEXT, "The flow: flows.id."),
    Column("flow_action_id", TEXT, "The action that sends it: flow_actions.id."),
    Column("channel", TEXT, "email or sms."),
    Column("name", TEXT, "Message name."),
    *EMAIL_COLUMNS,
    Column("template_id", TEXT, "The email template: templates.id."),
    Column("body", TEXT, "SMS body."),
    Column("definition", TEXT, "The message as Klaviyo returned it (JSON)."),
))

TEMPLATES_SPEC = TableSpec("templates", "Email templates.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "Template name."),
    Column("editor_type", TEXT, "How it was built, e.g. CODE, SYSTEM_DRAGGABLE."),
    Column("created", TEXT, "When Klaviyo created it (UTC, YYYY-MM-DDTHH:MM:SSZ)."),
    Column("updated", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("html", TEXT, "HTML (NULL with --no-html)."),
    Column("text", TEXT, "Plain text (NULL with --no-html)."),
    Column("amp", TEXT, "AMP HTML (NULL with --no-html)."),
))

STATS_SPEC = TableSpec("flow_stats_daily", "Performance of each flow message per day of the account's time zone "
    "(sync-account; UTC when unknown), from Klaviyo's flow series report. Days a message sent nothing have no "
    "row.", (
    Column("flow_id", TEXT, "The flow: flows.id."),
    Column("flow_message_id", TEXT, "The message: flow_messages.id."),
    Column("day", TEXT, "The day, YYYY-MM-DD, in the account's time zone (the account table; UTC when unknown)."),
    Column("send_channel", TEXT, "email or sms."),
    *REPORT_STAT_COLUMNS,
    Column("conversion_metric_id", TEXT, "The metric counted as a conversion: metrics.id."),
    Column("fetched_at", TEXT, "When these statistics were fetched (UTC)."),
), key=("flow_message_id", "day"))

DAYS_SPEC = TableSpec("flow_stats_days", "Which days' flow statistics were read, for which conversion metric, and "
    "when.", (
    Column("flow_id", TEXT, "The flow: flows.id."),
    Column("day", TEXT, "The day, YYYY-MM-DD, in the account's time zone."),
    Column("conversion_metric_id", TEXT, "The conversion metric it was read for: metrics.id."),
    Column("fetched_at", TEXT, "When that day was read (UTC)."),
), key=("flow_id", "day"))

SYNC_FLOWS = declare(Declaration(
    command="sync-flows", help="", scope=FLOWS_READ, tier="flows", paths=("/api/flows", "/api/flows/{id}"),
    tables=(FLOWS_SPEC, ACTIONS_SPEC, MESSAGES_SPEC),
    run=lambda client, db, result: sync_flows(client, db, result=result), sync_all=70, core=True,
    arguments={"stats": False},
))
SYNC_TEMPLATES = declare(Declaration(
    command="sync-templates", help="", scope=TEMPLATES_READ, tier="templates", paths=("/api/templates",),
    tables=(TEMPLATES_SPEC,),
    run=lambda client, db, result: sync_templates(client, db, result=result), sync_all=75, core=True,
))
SYNC_FLOW_STATS = declare(Declaration(
    command="sync-flow-stats", help="", scope=FLOWS_READ, tier="reports", paths=("/api/flow-series-reports",),
    tables=(STATS_SPEC, DAYS_SPEC),
    run=lambda client, db, result: sync_flow_stats(client, db, parse_range("30d"), result=result,
                                                   max_age=STATS_MAX_AGE),
    sync_all=80, core=True, arguments={"range": "30d"},
))
