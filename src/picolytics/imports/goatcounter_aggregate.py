"""GoatCounter's hits gathered into visits, page hits and event hits per local day
(docs/imports.md, GoatCounter); goatcounter_tables.py sums them into the tables.

A visit is one GoatCounter session's pageviews on one local day. A visit takes its
source, location, device, browser and OS from its first pageview and keeps its first
and last time and page. Hits without a session ("0-0") are visits of their own. Events
(Event true) are counted per day, name and session; they make no visit. Bot hits are
skipped and counted (their other columns unread).

Streamed: per row only dict updates keyed by tuples; a visit's columns come from caches
keyed by the raw values, so each distinct value is read (and checked) about once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, tzinfo
from sys import intern
from typing import Final, NoReturn, TypeVar

from picolytics.imports.goatcounter_csv import HEADER
from picolytics.imports.goatcounter_fields import (
    FALSE,
    NO_SESSION,
    TRUE,
    AgentColumns,
    ReferrerColumns,
    agent_columns,
    is_bot,
    moment,
    referrer_columns,
    text,
)

Fail = Callable[[int | None, str | None, str], NoReturn]
COLUMNS: Final = 14
_CACHE_LIMIT: Final = 100_000  # distinct values cached, then a cache starts over
_SCREEN, _LOCATION = 10, 11  # fields' indexes, for an error's value

# A hit's session: its id, or (for a hit without one) minus its line number.
Who = str | int
K = TypeVar("K")
V = TypeVar("V")


class Visit:
    """One session's pageviews of one local day (one object per visit, not per row):
    its first and last time (epoch seconds), entry and exit paths, pageviews, and the
    columns of its first pageview."""

    __slots__ = ("agent", "entry", "exit", "first", "last", "pageviews", "referrer")

    def __init__(
        self, stamp: float, path: str, referrer: ReferrerColumns, agent: AgentColumns
    ) -> None:
        self.first = self.last = stamp
        self.entry = self.exit = path
        self.pageviews = 1
        self.referrer, self.agent = referrer, agent


class GoatCounterHits:
    """What one file's hits add up to, filled by `add_all`."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self.visits: dict[tuple[date, Who], Visit] = {}
        self.page_hits: dict[tuple[date, str, Who], int] = {}
        self.event_hits: dict[tuple[date, str, Who], int] = {}
        self.bots = 0
        self._texts: dict[str, str] = {}
        self._agents: dict[tuple[str, str, str, str], AgentColumns] = {}
        self._referrers: dict[tuple[str, str], ReferrerColumns] = {}

    def add_all(self, records: Iterable[tuple[int, list[str]]], fail: Fail) -> None:
        """Add every record (its line number and fields); a malformed one is an error
        naming its line and column."""
        # Locals: this loop runs once per hit; what is rare goes to the methods below.
        visits, page_hits, event_hits, zone = (
            self.visits, self.page_hits, self.event_hits, self.zone
        )  # fmt: skip
        texts, agents, referrers = self._texts, self._agents, self._referrers
        days: dict[date, date] = {}
        for line, fields in records:
            if len(fields) != COLUMNS:
                _wrong_width(line, fields, fail)
            path, _title, event, _agent, browser, system, session, bot = fields[:8]
            referrer, scheme, screen, location, first_visit, created = fields[8:]
            if bot != "0" and _is_bot(line, bot, fail):
                self.bots += 1
                continue
            if event not in TRUE and event not in FALSE:
                fail(line, "Event", f"not a boolean: {event[:40]!r}")
            if first_visit not in TRUE and first_visit not in FALSE:
                fail(line, "FirstVisit", f"not a boolean: {first_visit[:40]!r}")
            at = _moment(line, created, fail)
            name = texts.get(path) or self._text(line, path, fail)
            agent = agents.get((browser, system, screen, location)) or self._agent(
                line, fields, fail
            )
            source = referrers.get((referrer, scheme)) or self._referrer(
                line, referrer, scheme, fail
            )
            # One object per distinct day and session, not per row: they fill the keys.
            day = at.astimezone(zone).date()
            day = days.get(day) or days.setdefault(day, day)
            who: Who = -line if session in NO_SESSION else intern(session)
            if event in TRUE:
                event_key = (day, name, who)
                event_hits[event_key] = event_hits.get(event_key, 0) + 1
                continue
            page_key = (day, name, who)
            page_hits[page_key] = page_hits.get(page_key, 0) + 1
            stamp = at.timestamp()
            visit = visits.get((day, who))
            if visit is None:
                visits[day, who] = Visit(stamp, name, source, agent)
                continue
            visit.pageviews += 1
            if stamp < visit.first:  # rows need not come in order
                visit.first, visit.entry = stamp, name
                visit.referrer, visit.agent = source, agent
            if stamp >= visit.last:
                visit.last, visit.exit = stamp, name

    def _text(self, line: int, path: str, fail: Fail) -> str:
        name = text(path)
        if not name:
            fail(line, "Path", "empty: every hit has a path (or an event name)")
        _remember(self._texts, path, name)
        return name

    def _agent(self, line: int, fields: list[str], fail: Fail) -> AgentColumns:
        key = (fields[4], fields[5], fields[_SCREEN], fields[_LOCATION])
        agent, bad = agent_columns(*key)
        if bad is not None:
            value = fields[_SCREEN if bad == "Screen size" else _LOCATION]
            fail(line, bad, f"not a GoatCounter value: {value[:40]!r}")
        _remember(self._agents, key, agent)
        return agent

    def _referrer(self, line: int, referrer: str, scheme: str, fail: Fail) -> ReferrerColumns:
        source = referrer_columns(referrer, scheme)
        if source is None:
            fail(line, "Referrer scheme", f"not h, g, c or o: {scheme[:40]!r}")
        _remember(self._referrers, (referrer, scheme), source)
        return source


def _remember(cache: dict[K, V], key: K, value: V) -> None:
    if len(cache) >= _CACHE_LIMIT:  # a bound on memory; the values are cheap to redo
        cache.clear()
    cache[key] = value


def _is_bot(line: int, bot: str, fail: Fail) -> bool:
    try:
        return is_bot(bot)
    except ValueError as error:
        fail(line, "Bot", str(error))


def _moment(line: int, created: str, fail: Fail) -> datetime:
    try:
        return moment(created)
    except ValueError as error:
        fail(line, "Date", str(error))


def _wrong_width(line: int, fields: list[str], fail: Fail) -> NoReturn:
    count = len(fields)
    if count < COLUMNS:
        fail(line, HEADER[count], f"missing: the line has {count} of {COLUMNS} columns")
    fail(line, None, f"{count} columns where the header has {COLUMNS}")
