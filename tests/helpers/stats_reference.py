"""An independent answer to a stats `Query`, in plain Python over the raw rows.

The query layer (src/picolytics/stats/) answers from rollups and raw SQL; this module
answers the same question from the `sessions` and `events` rows, SELECTed once, by
evaluating the definitions of docs/read-model.md directly: local days through
zoneinfo, visitors summed over local days, the two grains, the event-dimension rules,
behavioral filters (has_done over each visit's events), every filter operator
(regular expressions through Python's `re`, for the patterns both engines read
alike), time buckets, ordering and paging. It shares no code with
the engine but the typed Query and Row (the question and the shape of the answer) and
the event rules of picolytics.events (which tests/test_sql_rules.py ties to SQL).

The finer points (how negative operators treat the rows of an event dimension, which
buckets are rows, where None sorts, ...) are those of the "fine print" section of
docs/read-model.md; a comment says so where the code follows one.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import psycopg

from picolytics.dimensions import EVENT_DIMENSIONS, PARENT_OF, Dimension, Metric
from picolytics.events import counts_as_pageview, is_custom_event
from picolytics.stats.query import And, Condition, Filter, HasDone, Not, Or, Query, Row

# Columns of `sessions` behind each visit dimension ("source" is derived, below).
SESSION_COLUMNS: Final[dict[str, str]] = {
    "entry_page": "entry_path",
    "exit_page": "exit_path",
    "entry_page_hostname": "entry_hostname",
    "exit_page_hostname": "exit_hostname",
    "referrer": "referrer_host",
    "channel": "channel",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_content": "utm_content",
    "utm_term": "utm_term",
    "country": "country",
    "region": "region",
    "city": "city",
    "region_code": "region_code",
    "city_code": "city_code",
    "browser": "browser",
    "browser_version": "browser_version",
    "os": "os",
    "os_version": "os_version",
    "device": "device_type",
}
_COLUMN_LIST = ", ".join(sorted(set(SESSION_COLUMNS.values())))

SELECT_SESSIONS = f"""
SELECT site_id, session_id, visitor_id, started_at, last_seen_at, duration_s, pageviews,
       bounce, {_COLUMN_LIST}
FROM sessions ORDER BY site_id, session_id
"""
# props as jsonb text: json.loads keeps strings, numbers and booleans as they are.
SELECT_EVENTS = """
SELECT site_id, received_at, event_id, session_id, visitor_id, name, path, props::text,
       hostname
FROM events ORDER BY site_id, received_at, event_id
"""

# Rates as the engine documents them (stats/engine.py): rounded half away from zero,
# bounce rate and visit duration to one decimal, views per visit to two.
RATE_DECIMALS: Final[dict[str, int]] = {
    "bounce_rate": 1,
    "visit_duration": 1,
    "views_per_visit": 2,
}


# The grain each metric is counted over when there is no breakdown (docs/read-model.md).
VISIT_GRAIN_METRICS: Final = frozenset(
    {
        "visitors",
        "visits",
        "bounces",
        "bounce_rate",
        "visit_duration",
        "views_per_visit",
        "total_duration",
    }
)
EVENT_GRAIN_METRICS: Final = frozenset({"pageviews", "events"})


@dataclass(frozen=True, slots=True)
class RawSession:
    site_id: int
    session_id: int
    visitor_id: int
    started_at: datetime
    last_seen_at: datetime
    duration_s: int
    pageviews: int
    bounce: bool
    columns: dict[str, str]

    def value(self, dimension: str) -> str:
        if dimension == "source":
            # As docs/read-model.md and the `visits` view: campaign, referrer, direct.
            if self.columns["utm_source"]:
                return self.columns["utm_source"]
            return self.columns["referrer_host"] or "(direct)"
        return self.columns[SESSION_COLUMNS[dimension]]

    def parent(self, dimension: str) -> str:
        parent = PARENT_OF.get(dimension)  # type: ignore[call-overload]
        return "" if parent is None else self.value(parent)


@dataclass(frozen=True, slots=True)
class RawEvent:
    site_id: int
    received_at: datetime
    event_id: int
    session_id: int
    visitor_id: int
    name: str
    path: str
    props: dict[str, object] | None
    hostname: str = ""

    @property
    def is_pageview(self) -> bool:
        return counts_as_pageview(self.name, self.path)

    @property
    def is_custom(self) -> bool:
        return is_custom_event(self.name)

    @property
    def counted(self) -> bool:
        """A row of the event grain: a pageview or a custom event."""
        return self.is_pageview or self.is_custom


@dataclass(frozen=True, slots=True)
class Raw:
    """Every session and event of a database, as stored."""

    sessions: dict[tuple[int, int], RawSession]
    events: tuple[RawEvent, ...]
    events_of: dict[tuple[int, int], tuple[RawEvent, ...]]


@dataclass(frozen=True, slots=True)
class Answer:
    rows: tuple[Row, ...]  # every row, in the documented order (before limit/offset)
    page: tuple[Row, ...]  # rows[offset:offset + limit]
    total_rows: int


def load(connection: psycopg.Connection[Any]) -> Raw:
    """SELECT the raw rows once."""
    session_rows = connection.execute(SELECT_SESSIONS).fetchall()
    names = sorted(set(SESSION_COLUMNS.values()))
    sessions: dict[tuple[int, int], RawSession] = {}
    for row in session_rows:
        site_id, session_id, visitor_id, started, last_seen, duration, pageviews, bounce = row[:8]
        sessions[(site_id, session_id)] = RawSession(
            site_id,
            session_id,
            visitor_id,
            started.astimezone(UTC),
            last_seen.astimezone(UTC),
            duration,
            pageviews,
            bounce,
            dict(zip(names, row[8:], strict=True)),
        )
    events: list[RawEvent] = []
    grouped: dict[tuple[int, int], list[RawEvent]] = defaultdict(list)
    for (
        site_id,
        received,
        event_id,
        session_id,
        visitor_id,
        name,
        path,
        props,
        hostname,
    ) in connection.execute(SELECT_EVENTS).fetchall():
        raw_event = RawEvent(
            site_id,
            received.astimezone(UTC),
            event_id,
            session_id,
            visitor_id,
            name,
            path,
            None if props is None else json.loads(props),
            hostname,
        )
        events.append(raw_event)
        grouped[(site_id, session_id)].append(raw_event)
    return Raw(sessions, tuple(events), {key: tuple(value) for key, value in grouped.items()})


# -- values and conditions ---------------------------------------------------------------


def json_text(value: object) -> str:
    """A property value as text, as jsonb's ->> gives it (3, 2.5, true, pro)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"not a flat property value: {value!r}")


def event_value(event: RawEvent, dimension: str, prop_key: str | None) -> str | None:
    """The event's value of an event dimension, None when the event is not one of
    that dimension's rows (docs/read-model.md, Breakdowns; dimensions.EVENT_ROWS)."""
    if dimension == "page":
        return event.path if event.is_pageview else None
    if dimension == "event":
        return event.name if event.is_custom else None
    if dimension == "prop":
        if not event.is_custom or event.props is None or prop_key not in event.props:
            return None
        return json_text(event.props[prop_key])
    if dimension == "hostname":  # as Plausible's event:hostname: pageviews and custom events
        return event.hostname if event.counted else None
    raise ValueError(dimension)


def _fold(text: str, case_sensitive: bool) -> str:
    # Fine print: case-insensitive compares lowercased text; the strategies keep letters
    # that change case ASCII (the database's C locale lowercases only ASCII).
    return text if case_sensitive else text.lower()


def positive_holds(condition: Condition, value: str) -> bool:
    """is / contains / matches: any of the values."""
    sensitive = condition.case_sensitive
    folded = _fold(value, sensitive)
    operator = condition.operator
    if operator in ("is", "is_not"):
        return any(folded == _fold(v, sensitive) for v in condition.values)
    if operator in ("contains", "contains_not"):
        return any(_fold(v, sensitive) in folded for v in condition.values)
    flags = 0 if sensitive else re.IGNORECASE
    return any(re.search(v, value, flags) is not None for v in condition.values)


def holds(condition: Condition, value: str) -> bool:
    """The operator on one value: is/contains/matches any of the values, is_not/
    contains_not/matches_not none of them."""
    positive = positive_holds(condition, value)
    return not positive if condition.operator.endswith("_not") else positive


def is_event_dimension(dimension: str) -> bool:
    return dimension in EVENT_DIMENSIONS


def event_matches(condition: Condition, event: RawEvent) -> bool:
    """Does one event match a condition on an event dimension? Fine print: only the rows of
    the dimension have a value, and a negative operator matches those rows whose value
    is none of the values (a custom event never matches `page is_not /a`)."""
    value = event_value(event, condition.dimension, condition.prop_key)
    return value is not None and holds(condition, value)


def has_done(filter_: HasDone, session: RawSession | None, events: Sequence[RawEvent]) -> bool:
    """has_done: one of the visit's pageviews or custom events (whenever received) passes
    the inner filter by itself; has_not_done: none does. A session without a pageview
    is no visit: it has done nothing, so it passes every has_not_done."""
    done = (
        session is not None
        and session.pageviews > 0
        and any(e.counted and event_passes(filter_.filter, e, session) for e in events)
    )
    return not done if filter_.negated else done


def visit_passes(filter_: Filter, session: RawSession, events: Sequence[RawEvent]) -> bool:
    """Does a visit pass a filter (visit grain)? A visit dimension is the visit's value;
    an event dimension holds when at least one of the visit's pageviews or custom events
    matches. Fine print: any of the visit's events counts, also one outside the period."""
    if isinstance(filter_, HasDone):
        return has_done(filter_, session, events)
    if isinstance(filter_, Condition):
        if is_event_dimension(filter_.dimension):
            return any(event_matches(filter_, event) for event in events)
        return holds(filter_, session.value(filter_.dimension))
    if isinstance(filter_, And):
        return all(visit_passes(f, session, events) for f in filter_.filters)
    if isinstance(filter_, Or):
        return any(visit_passes(f, session, events) for f in filter_.filters)
    assert isinstance(filter_, Not)
    return not visit_passes(filter_.filter, session, events)


def event_passes(
    filter_: Filter,
    event: RawEvent,
    session: RawSession | None,
    session_events: Sequence[RawEvent] = (),
) -> bool:
    """Does an event pass a filter (event grain)? An event dimension is the event's own
    match; a visit dimension is the value of the event's visit; a behavioral filter is
    that of its visit (`session_events`: every event of the session). Fine print: an
    event whose session is not a visit (no pageview) has no visit, so no visit value
    holds for it."""
    if isinstance(filter_, HasDone):
        return has_done(filter_, session, session_events)
    if isinstance(filter_, Condition):
        if is_event_dimension(filter_.dimension):
            return event_matches(filter_, event)
        if session is None or session.pageviews == 0:
            return False
        return holds(filter_, session.value(filter_.dimension))
    if isinstance(filter_, And):
        return all(event_passes(f, event, session, session_events) for f in filter_.filters)
    if isinstance(filter_, Or):
        return any(event_passes(f, event, session, session_events) for f in filter_.filters)
    assert isinstance(filter_, Not)
    return not event_passes(filter_.filter, event, session, session_events)


# -- time --------------------------------------------------------------------------------


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone)


def bucket(moment: datetime, zone: ZoneInfo, interval: str | None) -> date | datetime | None:
    """The time bucket of a row. Hours are local wall-clock hours (naive datetimes):
    the repeated hour when clocks go back is one bucket, as rollup_hours keeps it."""
    if interval is None:
        return None
    wall = local(moment, zone)
    if interval == "hour":
        return wall.replace(minute=0, second=0, microsecond=0, tzinfo=None)
    day = wall.date()
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    assert interval == "month"
    return day.replace(day=1)


def daily_distinct(items: Iterable[tuple[datetime, int, int]], zone: ZoneInfo, hourly: bool) -> int:
    """Distinct ids of (time, site, id) rows, per site and local day, summed (per hour:
    per site and hour). Visitor ids are per site (docs/read-model.md, fine print)."""
    groups: dict[tuple[int, date | datetime | None], set[int]] = defaultdict(set)
    for moment, site_id, identifier in items:
        groups[(site_id, bucket(moment, zone, "hour" if hourly else "day"))].add(identifier)
    return sum(len(ids) for ids in groups.values())


# -- metrics -----------------------------------------------------------------------------


def rate(numerator: int, denominator: int, factor: int, metric: str) -> float | None:
    if denominator == 0:
        return None
    exact = Decimal(numerator * factor) / Decimal(denominator)
    quantum = Decimal(1).scaleb(-RATE_DECIMALS[metric])
    return float(exact.quantize(quantum, rounding=ROUND_HALF_UP))


def visit_metrics(
    metrics: Sequence[Metric],
    visits: Sequence[RawSession],
    events: Sequence[RawEvent],
    zone: ZoneInfo,
    hourly: bool,
    by_visit_dimension: bool,
) -> dict[Metric, int | float | None]:
    """Metrics of the visit grain (rows: visits), with pageviews and events from the
    event grain unless the rows are grouped by a visit dimension."""
    count = len(visits)
    out: dict[Metric, int | float | None] = {}
    for metric in metrics:
        if metric == "visits":
            out[metric] = count
        elif metric == "visitors":
            out[metric] = daily_distinct(
                ((v.started_at, v.site_id, v.visitor_id) for v in visits), zone, hourly
            )
        elif metric == "bounces":
            out[metric] = sum(v.bounce for v in visits)
        elif metric == "bounce_rate":
            out[metric] = rate(sum(v.bounce for v in visits), count, 100, metric)
        elif metric == "visit_duration":
            out[metric] = rate(sum(v.duration_s for v in visits), count, 1, metric)
        elif metric == "total_duration":
            out[metric] = sum(v.duration_s for v in visits)
        elif metric == "views_per_visit":
            out[metric] = rate(sum(v.pageviews for v in visits), count, 1, metric)
        elif metric == "pageviews":
            if by_visit_dimension:
                # docs/read-model.md: by a visit dimension, the pageviews of those visits.
                out[metric] = sum(v.pageviews for v in visits)
            else:
                out[metric] = sum(1 for e in events if e.is_pageview)
        elif metric == "events":
            # Fine print: by a visit dimension, the pageview and custom events of those
            # visits, whenever received (the counterpart of their pageviews).
            out[metric] = len(events)
        else:
            raise ValueError(metric)
    return out


def event_metrics(
    metrics: Sequence[Metric], events: Sequence[RawEvent], zone: ZoneInfo, hourly: bool
) -> dict[Metric, int | float | None]:
    """Metrics of an event-dimension group: counts, and visitors and visits as the
    distinct visitor and session ids among the rows, summed over local days."""
    out: dict[Metric, int | float | None] = {}
    for metric in metrics:
        if metric in ("events", "pageviews"):
            # For "page" both count its pageviews; "event" and "prop" rows are custom
            # events, none of them a pageview (fine print: pageviews there are 0).
            out[metric] = sum(1 for e in events if metric == "events" or e.is_pageview)
        elif metric == "visitors":
            out[metric] = daily_distinct(
                ((e.received_at, e.site_id, e.visitor_id) for e in events), zone, hourly
            )
        elif metric == "visits":
            out[metric] = daily_distinct(
                ((e.received_at, e.site_id, e.session_id) for e in events), zone, hourly
            )
        else:
            raise ValueError(f"{metric} has no meaning for an event dimension")
    return out


# -- the answer --------------------------------------------------------------------------


def in_period(moment: datetime, query: Query) -> bool:
    return query.period.start <= moment < query.period.end


def answer(raw: Raw, query: Query) -> Answer:
    zone = ZoneInfo(query.period.timezone)
    sites = set(query.site_ids)
    hourly = query.interval == "hour"
    breakdown = query.breakdown
    dimension: Dimension | None = breakdown.dimension if breakdown else None
    prop_key = breakdown.prop_key if breakdown else None

    def session_of(event: RawEvent) -> RawSession | None:
        return raw.sessions.get((event.site_id, event.session_id))

    events = [
        e
        for e in raw.events
        if e.site_id in sites
        and e.counted
        and in_period(e.received_at, query)
        and (
            query.filters is None
            or event_passes(
                query.filters, e, session_of(e), raw.events_of.get((e.site_id, e.session_id), ())
            )
        )
    ]
    groups: dict[tuple[date | datetime | None, str, str | None], dict[Metric, Any]] = {}

    if dimension is not None and is_event_dimension(dimension):
        grouped: dict[tuple[date | datetime | None, str, str | None], list[RawEvent]] = defaultdict(
            list
        )
        for e in events:
            value = event_value(e, dimension, prop_key)
            if value is not None:
                grouped[(bucket(e.received_at, zone, query.interval), "", value)].append(e)
        for key, group_events in grouped.items():
            groups[key] = event_metrics(query.metrics, group_events, zone, hourly)
    else:
        visits = [
            s
            for s in raw.sessions.values()
            if s.site_id in sites
            and s.pageviews > 0
            and in_period(s.started_at, query)
            and (
                query.filters is None
                or visit_passes(query.filters, s, raw.events_of.get((s.site_id, s.session_id), ()))
            )
        ]
        if dimension is None:
            by_time: dict[date | datetime | None, tuple[list[RawSession], list[RawEvent]]] = (
                defaultdict(lambda: ([], []))
            )
            # Fine print: a time bucket is a row when it holds rows of a grain the metrics
            # read (a day with pageviews but no visit is no row of a visits series).
            if set(query.metrics) & VISIT_GRAIN_METRICS:
                for s in visits:
                    by_time[bucket(s.started_at, zone, query.interval)][0].append(s)
            if set(query.metrics) & EVENT_GRAIN_METRICS:
                for e in events:
                    by_time[bucket(e.received_at, zone, query.interval)][1].append(e)
            if query.interval is None:
                by_time.setdefault(None, ([], []))
            for time, (group_visits, group_events) in by_time.items():
                groups[(time, "", None)] = visit_metrics(
                    query.metrics, group_visits, group_events, zone, hourly, False
                )
        else:
            by_value: dict[tuple[date | datetime | None, str, str | None], list[RawSession]] = (
                defaultdict(list)
            )
            for s in visits:
                key = (
                    bucket(s.started_at, zone, query.interval),
                    s.parent(dimension),
                    s.value(dimension),
                )
                by_value[key].append(s)
            for key, group_visits in by_value.items():
                visit_events = [
                    e
                    for s in group_visits
                    for e in raw.events_of.get((s.site_id, s.session_id), ())
                    if e.counted
                ]
                groups[key] = visit_metrics(
                    query.metrics, group_visits, visit_events, zone, hourly, True
                )

    rows = [
        Row(time=time, parent=parent, value=value, metrics=metrics)
        for (time, parent, value), metrics in groups.items()
    ]
    ordered = tuple(sorted(rows, key=sort_key(query)))
    end = None if query.limit is None else query.offset + query.limit
    return Answer(ordered, ordered[query.offset : end], len(ordered))


# -- order -------------------------------------------------------------------------------


class _Desc:
    """Reverses the order of a sort key component."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.key < self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def _component(row: Row, name: str, direction: str) -> tuple[int, Any]:
    """(1, 0) for a missing value, which sorts last in either direction; else (0, the
    value, reversed for a descending key)."""
    value: Any
    if name == "time":
        value = row.time
    elif name == "value":
        value = None if row.value is None else (row.value, row.parent)
    else:
        value = row.metrics.get(name)  # type: ignore[call-overload]
    if value is None:
        # Fine print: a rate with nothing to divide by (None) sorts after every number.
        return (1, 0)
    return (0, value if direction == "asc" else _Desc(value))


def documented_keys(query: Query) -> list[tuple[str, str]]:
    """The sort keys the documentation fixes: order_by, else time, the first metric
    descending and the value ascending."""
    if query.order_by:
        return list(query.order_by)
    keys: list[tuple[str, str]] = []
    if query.interval is not None:
        keys.append(("time", "asc"))
    keys.append((query.metrics[0], "desc"))
    if query.breakdown is not None:
        keys.append(("value", "asc"))
    return keys


def sort_key(query: Query) -> Callable[[Row], tuple[Any, ...]]:
    keys = documented_keys(query)

    def key(row: Row) -> tuple[Any, ...]:
        parts = [_component(row, name, direction) for name, direction in keys]
        # Ties the documentation leaves open: time, then value and parent, ascending.
        parts.append(_component(row, "time", "asc"))
        parts.append(_component(row, "value", "asc"))
        return tuple(parts)

    return key


def documented_key(query: Query) -> Callable[[Row], tuple[Any, ...]]:
    """The part of the sort key the documentation fixes (for checking an engine's
    order without presuming how it breaks the remaining ties)."""
    keys = documented_keys(query)
    full = sort_key(query)

    def key(row: Row) -> tuple[Any, ...]:
        return full(row)[: len(keys)]

    return key
