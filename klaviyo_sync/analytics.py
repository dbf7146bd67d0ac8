"""The analyst's rules (customers, RFM, cohorts, deliverability), each written once, as SQL.

Migration ``m008_analytics`` makes the views of the database from these templates, and the
commands in ``commands/customers.py`` run the very same templates with their own ``WHERE``
(a view cannot take a range or a metric as a parameter). So a rule lives here and nowhere
else: the CLI only filters, sorts and limits what a template answers.

Conventions: a *conversion* is an event of the conversion metric (``--metric``, default Placed
Order) that has a profile; its revenue is the event's ``value`` (``$value``). A conversion is
*attributed* when the attribution ``db.chosen_attribution`` picks for it (the one of
``attributed_conversions``: Klaviyo's own, kept at sync time) credits a campaign or flow message
(``db.credits_message``), otherwise *organic*. The rule lives in db.py: the rules here read the
view or call that fragment, they do not copy it.
"""

from __future__ import annotations

from .db import chosen_attribution, credits_message

# The metrics the views cover (the CLI's --metric may name any other): Placed Order, and every
# metric the stored campaign or flow statistics were read for.
VIEW_METRICS = """e.metric_id IN (
    SELECT id FROM metrics WHERE name = 'Placed Order'
    UNION SELECT conversion_metric_id FROM campaign_stats
    UNION SELECT conversion_metric_id FROM flow_stats_days)"""

# Per event with stored attributions: whether the one attributed_conversions counts
# (db.chosen_attribution) credits a message. Computed in one pass over event_attributions (the
# choice only for an event with several), then probed per conversion from a temporary index:
# looking each conversion's attribution up in event_attributions cost twice the time (measured,
# 5,000,000 events: `customers` 1.4 s CPU that way, 0.7 s this way).
ATTRIBUTED_EVENTS = f"""
    SELECT a.event_id,
           CASE WHEN count(*) = 1 THEN max({credits_message("a")})
                ELSE (SELECT {credits_message("a3")} FROM event_attributions a3
                      WHERE a3.id = ({chosen_attribution("a.event_id")})) END AS attributed
    FROM event_attributions a GROUP BY a.event_id"""


def customers_sql(where: str, email: bool = True, attribution: bool = True) -> str:
    """One row per metric and profile with at least one conversion among ``events e`` matching
    ``where``: orders, revenue, first and last order, revenue attributed and organic (and the
    profile's email unless ``email`` is false; without ``attribution`` no attribution is looked
    up and every conversion counts as organic: for rules that need neither). The attribution is
    attributed_conversions' (db.chosen_attribution), joined here on its own (ATTRIBUTED_EVENTS):
    through the view, each conversion also looked up its touch event (measured, 5,000,000 events:
    `customers` 4.3 s CPU through the view). The index idx_events_metric_id_profile_id covers
    every column read of events: no conversion is read from the table itself, and the rows come
    grouped per profile from it (no sort: 5,000,000 events, `customers --top 0` peaked 16 MB lower)."""
    return f"""
    SELECT c.metric_id, c.profile_id, {"p.email" if email else "NULL AS email"}, c.orders, round(c.revenue, 2) AS revenue, c.first_order,
           c.last_order, round(c.attributed, 2) AS attributed_revenue,
           round(c.revenue - c.attributed, 2) AS organic_revenue
    FROM (SELECT x.metric_id, x.profile_id, count(*) AS orders, total(x.value) AS revenue,
                 min(x.datetime) AS first_order, max(x.datetime) AS last_order,
                 total(CASE WHEN x.attributed THEN x.value END) AS attributed
          FROM (SELECT e.metric_id, e.profile_id, e.datetime, e.value,
                       {"a.attributed" if attribution else "NULL"} AS attributed
                FROM events e
                {f"LEFT JOIN ({ATTRIBUTED_EVENTS}) a ON a.event_id = e.id" if attribution else ""}
                WHERE e.profile_id IS NOT NULL AND ({where})) x
          GROUP BY x.metric_id, x.profile_id) c
    {"LEFT JOIN profiles p ON p.id = c.profile_id" if email else ""}"""


# RFM groups from the three scores (recency, frequency, monetary; 3 is best). Klaviyo names six
# groups; the scores of Loyal are Klaviyo's published ones, the rest follow its descriptions
# (README, rfm): every one of the 27 combinations is in exactly one group.
RFM_GROUPS = {
    "Champions": ("333", "332", "323"),
    "Loyal": ("321", "322", "331", "232", "233"),
    "Recent": ("311", "312", "313"),
    "Needs attention": ("211", "212", "213", "221", "222", "223", "231"),
    "At risk": ("121", "122", "123", "131", "132", "133"),
    "Inactive": ("111", "112", "113"),
}
_RFM_CASE = "CASE " + " ".join(
    f"WHEN s.rfm_score IN ({', '.join(scores)}) THEN '{name}'" for name, scores in RFM_GROUPS.items()) + " END"


def _score(order: str) -> str:
    """1-3 by rank among the metric's customers: 1 + floor(3 * (rank - 1) / customers), where rank
    is SQL's rank() (ties share the lowest rank of their run, so they share a score)."""
    return (f"1 + 3 * (rank() OVER (PARTITION BY r.metric_id ORDER BY {order}) - 1)"
            " / count(*) OVER (PARTITION BY r.metric_id)")


def rfm_sql(where: str, end: str) -> str:
    """Per metric and customer of ``where``: recency (whole days from the last conversion to
    ``end``, an SQL expression for the range's end), frequency, monetary, their scores, the RFM
    score (e.g. 321) and its group."""
    # The email is joined last: carried through the window sorts it cost a quarter of the time.
    return f"""
    SELECT s.metric_id, s.profile_id, p.email, s.recency_days, s.frequency, s.monetary, s.last_order,
           s.recency_score, s.frequency_score, s.monetary_score, s.rfm_score, {_RFM_CASE} AS rfm_group
    FROM (SELECT t.*, t.recency_score * 100 + t.frequency_score * 10 + t.monetary_score AS rfm_score
          FROM (SELECT r.metric_id, r.profile_id, r.recency_days, r.orders AS frequency,
                       r.revenue AS monetary, r.last_order,
                       {_score("r.recency_days DESC")} AS recency_score,
                       {_score("r.orders")} AS frequency_score,
                       {_score("r.revenue")} AS monetary_score
                FROM (SELECT c.*, CAST(julianday({end}) - julianday(c.last_order) AS INTEGER) AS recency_days
                      FROM ({customers_sql(where, email=False, attribution=False)}) c) r) t) s
    LEFT JOIN profiles p ON p.id = s.profile_id"""


def rfm_groups_sql(rfm: str) -> str:
    """Customers and revenue per metric and RFM group of an ``rfm_sql`` answer."""
    return f"""
    SELECT g.metric_id, g.rfm_group, count(*) AS customers, round(total(g.monetary), 2) AS revenue,
           round(avg(g.frequency), 2) AS avg_orders, round(avg(g.recency_days), 1) AS avg_recency_days
    FROM ({rfm}) g GROUP BY g.metric_id, g.rfm_group"""


def cohorts_sql(where: str) -> str:
    """Per metric, cohort (the UTC month, YYYY-MM, of a customer's first conversion among
    ``where``) and month after it (0 = the cohort's own month, up to the month of the metric's
    latest conversion): the cohort's size, how many of its customers converted in that month,
    and that share. Month 0 is the whole cohort by definition."""
    return f"""
    WITH active AS (SELECT e.metric_id, e.profile_id, substr(e.datetime, 1, 7) AS month
                    FROM events e WHERE e.profile_id IS NOT NULL AND ({where})
                    GROUP BY 1, 2, 3),
    counts AS (SELECT metric_id, cohort, month, count(*) AS n
               FROM (SELECT metric_id, month,
                            first_value(month) OVER (PARTITION BY metric_id, profile_id ORDER BY month) AS cohort
                     FROM active)
               GROUP BY metric_id, cohort, month),
    latest AS (SELECT metric_id, max(month) AS month FROM counts GROUP BY metric_id),
    grid(metric_id, cohort, month, months_after) AS (
        SELECT metric_id, cohort, cohort, 0 FROM counts WHERE month = cohort
        UNION ALL
        SELECT g.metric_id, g.cohort, strftime('%Y-%m', g.month || '-01', '+1 month'), g.months_after + 1
        FROM grid g JOIN latest l ON l.metric_id = g.metric_id
        WHERE strftime('%Y-%m', g.month || '-01', '+1 month') <= l.month)
    SELECT g.metric_id, g.cohort, g.months_after, g.month, s.n AS cohort_size,
           coalesce(r.n, 0) AS customers, round(coalesce(r.n, 0) * 1.0 / s.n, 4) AS share
    FROM grid g
    JOIN counts s ON s.metric_id = g.metric_id AND s.cohort = g.cohort AND s.month = g.cohort
    LEFT JOIN counts r ON r.metric_id = g.metric_id AND r.cohort = g.cohort AND r.month = g.month"""


# Klaviyo's deliverability bands (help centre, "How to monitor email deliverability
# performance", https://help.klaviyo.com/hc/en-us/articles/115000201131): per rate, its
# numerator, denominator, whether higher is better, and the cut-offs in hundredths of a percent
# between great / proficient / room for improvement / critical.
BANDS = {
    "open_rate": ("opens_unique", "delivered", True, (2500, 1500, 1000)),
    "click_rate": ("clicks_unique", "delivered", True, (250, 150, 100)),
    "bounce_rate": ("bounced", "recipients", False, (40, 80, 150)),
    "unsubscribe_rate": ("unsubscribes", "delivered", False, (20, 30, 70)),
    "spam_complaint_rate": ("spam_complaints", "delivered", False, (5, 8, 15)),
}
BAND_NAMES = ("great", "proficient", "room for improvement", "critical")


def _band(rate: str) -> str:
    """The band of a rate, compared exactly in integers: n * 10000 against cut * d."""
    num, den, higher, cuts = BANDS[rate]
    n, d = f"d.{num}", f"d.{den}"
    op = ">=" if higher else "<"
    whens = " ".join(f"WHEN {n} * 10000 {op} {cut} * {d} THEN '{BAND_NAMES[i]}'" for i, cut in enumerate(cuts))
    return (f"CASE WHEN d.channel != 'email' OR {n} IS NULL OR coalesce({d}, 0) = 0 THEN NULL "
            f"{whens} ELSE '{BAND_NAMES[3]}' END AS {rate.replace('_rate', '_band')}")


def deliverability_sql(campaign_where: str, flow_where: str) -> str:
    """Per campaign message (campaign_stats matching ``campaign_where``, on ``c`` and ``s``) and
    per flow message (flow_stats_daily days matching ``flow_where``, on ``s``, summed): counts,
    the five rates (fractions) and, for email, each rate's band."""
    rates = []
    for rate, (num, den, _, _) in BANDS.items():
        expr = f"d.{num} * 1.0 / nullif(d.{den}, 0)"
        if rate == "open_rate":  # an SMS has no opens
            expr = f"CASE WHEN d.channel = 'sms' THEN NULL ELSE {expr} END"
        rates.append(f"{expr} AS {rate}")
    rates = ",\n           ".join(rates)
    bands = ",\n           ".join(_band(rate) for rate in BANDS)
    return f"""
    SELECT d.source, d.parent_id, d.parent_name, d.message_id, d.message_name, d.channel,
           d.first_send, d.last_send, d.recipients, d.delivered, d.opens_unique, d.clicks_unique,
           d.bounced, d.unsubscribes, d.spam_complaints,
           {rates},
           {bands}
    FROM (SELECT 'campaign' AS source, c.id AS parent_id, c.name AS parent_name,
                 s.campaign_message_id AS message_id, coalesce(m.label, c.name) AS message_name,
                 coalesce(m.channel, c.channel) AS channel, c.send_time AS first_send, c.send_time AS last_send,
                 s.recipients, s.delivered, s.opens_unique, s.clicks_unique, s.bounced, s.unsubscribes,
                 s.spam_complaints
          FROM campaign_stats s
          JOIN campaigns c ON c.id = s.campaign_id
          LEFT JOIN campaign_messages m ON m.id = s.campaign_message_id
          WHERE s.campaign_message_id != '' AND ({campaign_where})
          UNION ALL
          SELECT 'flow', s.flow_id, f.name, s.flow_message_id, m.name,
                 coalesce(m.channel, CASE s.send_channel WHEN 'push-notification' THEN 'mobile_push'
                                                         ELSE s.send_channel END),
                 min(s.day), max(s.day), sum(s.recipients), sum(s.delivered), sum(s.opens_unique),
                 sum(s.clicks_unique), sum(s.bounced), sum(s.unsubscribes), sum(s.spam_complaints)
          FROM flow_stats_daily s
          LEFT JOIN flows f ON f.id = s.flow_id
          LEFT JOIN flow_messages m ON m.id = s.flow_message_id
          WHERE ({flow_where})
          GROUP BY s.flow_message_id) d"""


def timeline_sql(where: str) -> str:
    """Every event of ``events e`` matching ``where`` with its metric and, when Klaviyo attributed
    it (conversions), the campaign or flow, the message and its channel: its row of
    attributed_conversions (which holds the rule when an event has several attributions)."""
    return f"""
    SELECT e.profile_id, e.id AS event_id, e.datetime, e.metric_id, v.metric_name AS metric, e.value,
           v.attributed_event_id, v.campaign_id, c.name AS campaign_name, v.flow_id, f.name AS flow_name,
           v.message_id, coalesce(cm.label, fm.name) AS message_name, v.channel
    FROM events e
    JOIN attributed_conversions v ON v.event_id = e.id
    LEFT JOIN campaigns c ON c.id = v.campaign_id
    LEFT JOIN campaign_messages cm ON cm.id = v.campaign_message_id
    LEFT JOIN flows f ON f.id = v.flow_id
    LEFT JOIN flow_messages fm ON fm.id = v.flow_message_id
    WHERE {where}"""


# -- the views (migration m008_analytics) ------------------------------------------------------
NOW = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
VIEWS = {
    "customer_summary": f"""
        SELECT mt.name AS metric, s.* FROM ({customers_sql(VIEW_METRICS)}) s
        LEFT JOIN metrics mt ON mt.id = s.metric_id""",
    "customer_rfm": f"""
        SELECT mt.name AS metric, s.*
        FROM ({rfm_sql(VIEW_METRICS + " AND e.datetime >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-365 days')", NOW)}) s
        LEFT JOIN metrics mt ON mt.id = s.metric_id""",
    "cohort_retention": f"""
        SELECT mt.name AS metric, s.* FROM ({cohorts_sql(VIEW_METRICS)}) s
        LEFT JOIN metrics mt ON mt.id = s.metric_id""",
    "message_deliverability": deliverability_sql("1", "1"),
    "customer_timeline": timeline_sql("e.profile_id IS NOT NULL"),
}


def create_views(db) -> None:
    for name, sql in VIEWS.items():
        db.execute(f"DROP VIEW IF EXISTS {name}")
        db.create_view(name, sql)
