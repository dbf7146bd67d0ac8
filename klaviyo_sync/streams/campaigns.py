"""Campaigns: the campaign listing is a declared stream (one pass per channel, archived and
not); their statistics come from the report endpoint, whose 225-a-day quota gets its own
engine: as few requests as the API allows, and a spent quota stored as partial."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from sqlite_utils import Database

from .. import db as store
from ..client import KlaviyoClient, Page
from ..errors import RateLimitExceeded, UsageError
from ..timeutil import Window, iso, parse_datetime, parse_range, utcnow
from ..transform import campaign_row, message_row, related_ids
from .declare import CAMPAIGNS_READ, INTEGER, REAL, TEXT, Column, Declaration, TableSpec, declare
from .engine import Stream, SyncResult, Table, run_stream
from .metrics import resolve_metrics

CHANNELS = ("email", "sms", "mobile_push")
REPORT_CHANNEL = {"email": "email", "sms": "sms", "mobile_push": "push-notification"}
REPORT_BATCH = 100  # contains-any takes at most 100 items
REPORT_MAX_SPAN = timedelta(days=364)  # the report's timeframe may span at most one year
DEFAULT_CONVERSION_METRIC = "Placed Order"

CAMPAIGNS_TABLE = Table("campaigns", tuple(store.CAMPAIGN_COLUMNS))
MESSAGES_TABLE = Table("campaign_messages", tuple(store.CAMPAIGN_MESSAGE_COLUMNS))
STATS_TABLE = Table("campaign_stats", tuple(store.CAMPAIGN_STAT_COLUMNS), key=("campaign_id", "campaign_message_id"))
STAT_INSERT = STATS_TABLE.upsert


def _partition(channel: str, archived: bool) -> tuple[str, ...]:
    return (f"equals(messages.channel,'{channel}')", f"equals(archived,{'true' if archived else 'false'})")


def _channel_of(partition: tuple[str, ...]) -> str:
    return partition[0].split("'")[1]


def _campaign_page_rows(page: Page, partition: tuple[str, ...]) -> list[tuple[Table, list]]:
    channel = _channel_of(partition)
    messages = {m["id"]: m for m in page.included if m.get("type") == "campaign-message"}
    campaign_rows, message_rows = [], []
    for c in page.data:
        own = [message_row(messages[mid], c["id"]) for mid in related_ids(c, "campaign-messages") if mid in messages]
        message_rows.extend(own)
        campaign_rows.append(campaign_row(c, channel, own))
    return [(MESSAGES_TABLE, message_rows), (CAMPAIGNS_TABLE, campaign_rows)]


# The channel filter is required, one channel a call; archived campaigns are hidden unless
# asked for, so each channel is listed twice.
CAMPAIGNS = Stream(
    name="campaigns",
    path="/api/campaigns",
    table=CAMPAIGNS_TABLE,
    rows=_campaign_page_rows,  # each page splits into campaigns and their messages
    type="campaign",
    scope=CAMPAIGNS_READ,
    params={"include": "campaign-messages",
            "fields[campaign-message]": "definition,send_times,created_at,updated_at"},
    partitions=tuple(_partition(ch, archived) for ch in CHANNELS for archived in (False, True)),
    included=(),
)


def fetch_and_save_campaigns(client: KlaviyoClient, db: Database, channels: list[str], result: SyncResult) -> None:
    stream = dataclasses.replace(CAMPAIGNS, partitions=tuple(
        _partition(ch, archived) for ch in channels for archived in (False, True)))
    result.rows.setdefault("campaign_messages", 0)
    run_stream(client, db, stream, result)


def conversion_metric_id(client: KlaviyoClient | None, db: Database, wanted: str | None) -> str:
    try:
        return resolve_metrics(client, db, [wanted or DEFAULT_CONVERSION_METRIC])[0]
    except UsageError:
        if wanted:
            raise
        raise UsageError(
            f"no {DEFAULT_CONVERSION_METRIC!r} metric in this account for conversion statistics: "
            "pass --conversion-metric NAME_OR_ID"
        ) from None


def campaigns_needing_stats(db: Database, window: Window, channels: list[str], max_age: timedelta,
                            now: datetime) -> list[tuple[str, str]]:
    """(id, send_time) of sent campaigns in the window whose statistics are missing or old."""
    marks = ",".join("?" for _ in channels)
    return [tuple(r) for r in db.execute(
        f"""SELECT c.id, c.send_time FROM campaigns c
            WHERE c.send_time >= ? AND c.send_time < ? AND c.channel IN ({marks})
              AND c.send_time <= ?
              AND NOT EXISTS (SELECT 1 FROM campaign_stats s
                              WHERE s.campaign_id = c.id AND s.fetched_at >= ?)
            ORDER BY c.send_time""",
        [iso(window.start), iso(window.end), *channels, iso(now), iso(now - max_age)],
    ).fetchall()]


def report_batches(campaigns: list[tuple[str, str]]) -> list[tuple[list[str], datetime, datetime]]:
    """Group (id, send_time) sorted by send time into batches of <= 100 ids whose padded
    timeframe spans at most a year: the fewest report requests the API allows."""
    batches: list[tuple[list[str], datetime, datetime]] = []
    for cid, sent in campaigns:
        t = parse_datetime(sent)
        # A day of padding each side: a custom timeframe is read in the account's time zone.
        lo = (t - timedelta(days=1)).replace(hour=0, minute=0, second=0)
        hi = (t + timedelta(days=2)).replace(hour=0, minute=0, second=0)
        if batches and len(batches[-1][0]) < REPORT_BATCH and hi - batches[-1][1] <= REPORT_MAX_SPAN:
            ids, start, _ = batches[-1]
            ids.append(cid)
            batches[-1] = (ids, start, hi)
        else:
            batches.append(([cid], lo, hi))
    return batches


def report_body(ids: list[str], start: datetime, end: datetime, metric_id: str) -> dict:
    quoted = ",".join(f'"{i}"' for i in ids)
    return {"data": {"type": "campaign-values-report", "attributes": {
        "statistics": store.STAT_NAMES,
        "timeframe": {"start": iso(start), "end": iso(end)},
        "conversion_metric_id": metric_id,
        "group_by": ["campaign_id", "campaign_message_id", "send_channel"],
        "filter": f"contains-any(campaign_id,[{quoted}])",
    }}}


def fetch_and_save_stats(client: KlaviyoClient, db: Database, campaigns: list[tuple[str, str]],
                         metric_id: str, result: SyncResult, now: datetime) -> None:
    fetched_at = iso(now)
    for ids, start, end in report_batches(campaigns):
        url: str | None = "/api/campaign-values-reports"
        results: list[dict] = []
        body: dict | None = report_body(ids, start, end, metric_id)
        seen: set[str] = set()
        while url:  # the spec declares only links.self, but a links.next is followed if sent
            resp = client.request("POST", url, json_body=body, expect="object")
            results.extend(((resp.get("data") or {}).get("attributes") or {}).get("results") or [])
            url = (resp.get("links") or {}).get("next")
            if url:
                client.check_origin(url)
                client.check_cursor(seen, url)
        rows = []
        seen = set()
        wanted = set(ids)
        for r in results:
            g = r.get("groupings") or {}
            st = r.get("statistics") or {}
            cid = g.get("campaign_id")
            if cid not in wanted:
                continue
            seen.add(cid)
            rows.append((cid, g.get("campaign_message_id") or "", g.get("send_channel"),
                         *[st.get(name) for name in store.STAT_NAMES],
                         metric_id, iso(start), iso(end), fetched_at))
        # Campaigns the report has nothing for get an empty row, so they are not asked again
        # until their statistics are --stats-max-age old.
        for cid in ids:
            if cid not in seen:
                rows.append((cid, "", None, *[None] * len(store.STAT_NAMES), metric_id, iso(start), iso(end), fetched_at))
        with db.atomic():
            marks = ",".join("?" for _ in ids)
            db.execute(f"DELETE FROM campaign_stats WHERE campaign_id IN ({marks})", ids)
            result.add_rows("campaign_stats", store.write_rows(db, STAT_INSERT, rows))
        result.extra["report_requests"] = result.extra.get("report_requests", 0) + 1


def sync_campaigns(
    client: KlaviyoClient,
    db: Database,
    window: Window,
    *,
    channels: list[str] | None = None,
    stats: bool = True,
    conversion_metric: str | None = None,
    stats_max_age: timedelta = timedelta(hours=6),
    now: datetime | None = None,
    result: SyncResult | None = None,
) -> SyncResult:
    now = now or utcnow()
    channels = list(channels or CHANNELS)
    result = SyncResult.begin(result, ["campaigns", "campaign_messages", "campaign_stats"], window)
    fetch_and_save_campaigns(client, db, channels, result)
    if not stats:
        return result
    metric_id = conversion_metric_id(client, db, conversion_metric)
    todo = campaigns_needing_stats(db, window, channels, stats_max_age, now)
    result.extra["stats_requested_for"] = len(todo)
    try:
        fetch_and_save_stats(client, db, todo, metric_id, result, now)
    except RateLimitExceeded as exc:
        missing = len(campaigns_needing_stats(db, window, channels, stats_max_age, now))
        result.extra["stats_missing"] = missing
        result.partial = f"campaigns stored, but statistics are missing for {missing} campaign(s): {exc}"
    return result


# The report statistics of campaign_stats and flow_stats_daily (streams/flows.py).
REPORT_STAT_COLUMNS = (
    Column("recipients", INTEGER, "Recipients of the message."),
    Column("delivered", INTEGER, "Messages delivered."),
    Column("delivery_rate", REAL, "delivered / recipients (a fraction 0-1)."),
    Column("opens", INTEGER, "Opens, counting repeats."),
    Column("opens_unique", INTEGER, "Recipients who opened."),
    Column("open_rate", REAL, "opens_unique / delivered (a fraction 0-1)."),
    Column("clicks", INTEGER, "Clicks, counting repeats."),
    Column("clicks_unique", INTEGER, "Recipients who clicked."),
    Column("click_rate", REAL, "clicks_unique / delivered (a fraction 0-1)."),
    Column("conversions", INTEGER, "Conversions (the conversion metric's events) attributed to the message."),
    Column("conversion_uniques", INTEGER, "Recipients who converted."),
    Column("conversion_rate", REAL, "conversion_uniques / delivered (a fraction 0-1)."),
    Column("conversion_value", REAL, "Revenue attributed to the message."),
    Column("unsubscribes", INTEGER, "Unsubscribes."),
    Column("unsubscribe_rate", REAL, "Unsubscribe rate (a fraction 0-1)."),
    Column("bounced", INTEGER, "Bounces (email)."),
    Column("bounce_rate", REAL, "bounced / recipients (a fraction 0-1)."),
    Column("spam_complaints", INTEGER, "Spam complaints."),
    Column("spam_complaint_rate", REAL, "spam_complaints / delivered (a fraction 0-1)."),
)

CAMPAIGNS_SPEC = TableSpec("campaigns", "Campaigns of every channel, archived ones too.", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("name", TEXT, "Campaign name."),
    Column("channel", TEXT, "email, sms or mobile_push."),
    Column("status", TEXT, "Klaviyo's status, e.g. Sent, Draft."),
    Column("archived", INTEGER, "1 if archived, else 0."),
    Column("send_time", TEXT, "When it was sent (UTC): send_time, else its messages' earliest send time."),
    Column("scheduled_at", TEXT, "When it was scheduled (UTC)."),
    Column("created_at", TEXT, "When Klaviyo created it (UTC)."),
    Column("updated_at", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("send_strategy", TEXT, "How it is sent (JSON)."),
    Column("subject", TEXT, "Subject of its first message."),
    Column("label", TEXT, "Label of its first message."),
    Column("attributes", TEXT, "Every attribute as Klaviyo returned it (JSON)."),
))

# An email message's columns, in campaign_messages and flow_messages (streams/flows.py).
EMAIL_COLUMNS = (
    Column("subject", TEXT, "Email subject."),
    Column("preview_text", TEXT, "Email preview text."),
    Column("from_email", TEXT, "Sender address."),
    Column("from_label", TEXT, "Sender name."),
)
MESSAGES_SPEC = TableSpec("campaign_messages", "The messages of each campaign (one per channel variant).", (
    Column("id", TEXT, "Klaviyo's id (primary key)."),
    Column("campaign_id", TEXT, "The campaign: campaigns.id."),
    Column("channel", TEXT, "email, sms or mobile_push."),
    Column("label", TEXT, "Message label."),
    *EMAIL_COLUMNS,
    Column("body", TEXT, "SMS or push body."),
    Column("send_time", TEXT, "Earliest send time (UTC)."),
    Column("send_times", TEXT, "Every send time (JSON)."),
    Column("created_at", TEXT, "When Klaviyo created it (UTC)."),
    Column("updated_at", TEXT, "When it last changed in Klaviyo (UTC)."),
    Column("definition", TEXT, "The message definition as Klaviyo returned it (JSON)."),
))

STATS_SPEC = TableSpec("campaign_stats", "Performance of each campaign message, from Klaviyo's campaign values "
    "report. A campaign the report had nothing for has one row with empty statistics and campaign_message_id = "
    "''.", (
    Column("campaign_id", TEXT, "The campaign: campaigns.id."),
    Column("campaign_message_id", TEXT, "The message: campaign_messages.id ('' on an empty row)."),
    Column("send_channel", TEXT, "The report's channel: email, sms, push-notification."),
    *REPORT_STAT_COLUMNS,
    Column("conversion_metric_id", TEXT, "The metric counted as a conversion: metrics.id."),
    Column("timeframe_start", TEXT, "Start of the report timeframe asked for (UTC)."),
    Column("timeframe_end", TEXT, "End of the report timeframe asked for (UTC)."),
    Column("fetched_at", TEXT, "When these statistics were fetched (UTC)."),
), key=("campaign_id", "campaign_message_id"))

SYNC_CAMPAIGNS = declare(Declaration(
    command="sync-campaigns", help="", scope=CAMPAIGNS_READ, tier="campaigns",
    paths=("/api/campaigns", "/api/campaign-values-reports"),
    tables=(CAMPAIGNS_SPEC, MESSAGES_SPEC, STATS_SPEC),
    run=lambda client, db, result: sync_campaigns(client, db, parse_range("30d"), result=result),
    sync_all=60, core=True, arguments={"range": "30d"},
))
