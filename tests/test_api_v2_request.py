"""api/v2_request.py: Plausible's Stats API v2 query body, parsed and checked.

Pure unit tests (no database, no HTTP). Request bodies marked "docs example" are the
published examples of Plausible's v2 reference (plausible/docs, src/js/apiv2-examples/
*-query.json); expected date ranges at 2021-05-05 12:30 UTC are those of Plausible's
own parser tests (plausible/analytics, test/plausible/stats/query_parser_test.exs).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picolytics.api.v2_conversions import group_key, group_rate, ordered, percent
from picolytics.api.v2_dates import show
from picolytics.api.v2_filters import ApiAnd, ApiCondition, ApiHasDone, ApiNot, ApiOr
from picolytics.api.v2_names import PLAUSIBLE_DIMENSIONS, dimension
from picolytics.api.v2_query import API_METRICS, ApiQuery, Include, SiteContext
from picolytics.api.v2_request import parse, requested_site
from picolytics.api.v2_rules import check_goal_names, names_goals
from picolytics.api.v2_translate import translate
from picolytics.dimensions import DIMENSIONS
from picolytics.errors import ApiRequestError, PicolyticsError
from picolytics.stats.query import And, Breakdown, Condition, Not, Query, Row

NOW = datetime(2021, 5, 5, 12, 30, tzinfo=UTC)  # Plausible's parser tests' "now"
UTC_SITE = SiteContext("UTC", date(2020, 1, 1))
NEW_YORK = "America/New_York"
HOUR = timedelta(hours=1)


def body(**fields: Any) -> dict[str, Any]:
    return {"site_id": "dummy.site", "metrics": ["visitors"], "date_range": "7d", **fields}


def ok(query_body: object, site: SiteContext = UTC_SITE, now: datetime = NOW) -> ApiQuery:
    return parse(query_body, site=site, now=now)


def local_days(query: ApiQuery) -> tuple[date, date]:
    tz = ZoneInfo(query.period.timezone)
    return query.period.start.astimezone(tz).date(), (query.period.end.astimezone(tz) - HOUR).date()


def real_hours(query: ApiQuery) -> float:
    # In UTC: within one zone Python subtracts wall-clock times.
    return (query.period.end.astimezone(UTC) - query.period.start.astimezone(UTC)) / HOUR


# --- Plausible's published examples --------------------------------------------------


def test_docs_example_country_and_city() -> None:
    # docs example: country-and-city-query.json
    query = ok(
        {
            "site_id": "dummy.site",
            "metrics": ["visitors", "pageviews", "bounce_rate"],
            "date_range": "7d",
            "filters": [["is_not", "visit:country_name", [""]]],
            "dimensions": ["visit:country_name", "visit:city_name"],
        }
    )
    assert query.site_id == "dummy.site"
    assert query.metrics == ("visitors", "pageviews", "bounce_rate")
    assert [(d.name, d.ours, d.form) for d in query.dimensions] == [
        ("visit:country_name", "country", "name"),
        ("visit:city_name", "city", "value"),
    ]
    condition = query.filters[0]
    assert isinstance(condition, ApiCondition)
    assert (condition.operator, condition.clauses) == ("is_not", ("",))
    assert (query.limit, query.offset, query.include) == (10_000, 0, Include())
    assert query.order_by is None
    # Country names are the display names of our codes (data/country_names.json):
    # answered, with a city and its country as one breakdown.
    assert query.unsupported == ()


def test_docs_example_custom_date_range() -> None:
    # docs example: custom-date-range-query.json
    query = ok(
        {
            "site_id": "dummy.site",
            "metrics": ["visitors"],
            "date_range": ["2024-08-01", "2024-08-15"],
        }
    )
    assert query.date_range == ("2024-08-01", "2024-08-15")
    assert local_days(query) == (date(2024, 8, 1), date(2024, 8, 15))
    assert query.unsupported == ()


def test_docs_example_filtering_basics() -> None:
    # docs example: filtering-basics-query.json
    query = ok(
        body(
            filters=[
                ["contains", "event:page", ["/docs", "/pricing"]],
                ["is", "visit:country_name", ["Estonia", "United States of America"]],
            ]
        )
    )
    first, second = query.filters
    assert isinstance(first, ApiCondition) and isinstance(second, ApiCondition)
    assert (first.dimension.ours, first.operator, first.clauses) == (
        "page",
        "contains",
        ("/docs", "/pricing"),
    )
    assert second.dimension.name == "visit:country_name"


def test_docs_example_case_insensitive() -> None:
    # docs example: filtering-case-insensitive-query.json
    query = ok(body(filters=[["contains", "event:page", ["blog"], {"case_sensitive": False}]]))
    assert query.filters == (
        ApiCondition("contains", dimension_of("event:page"), ("blog",), False),
    )


def test_docs_example_timeseries_and_time_labels() -> None:
    # docs examples: timeseries-query.json, time-labels-query.json
    series = ok(
        body(
            metrics=["visitors", "events"],
            filters=[["is", "visit:os", ["GNU/Linux", "Mac"]]],
            dimensions=["time:day"],
        )
    )
    assert series.time_dimension is not None and series.time_dimension.interval == "day"
    assert series.breakdowns == ()
    labels = ok(body(date_range="day", dimensions=["time:hour"], include={"time_labels": True}))
    assert labels.include == Include(time_labels=True)
    assert labels.time_dimension is not None and labels.time_dimension.interval == "hour"


def test_docs_example_custom_properties() -> None:
    # docs example: custom-properties-query.json (two dimensions, one of them time)
    query = ok(
        body(
            dimensions=["time:day", "event:props:is_customer"],
            order_by=[["time:day", "asc"], ["event:props:is_customer", "desc"]],
        )
    )
    (prop,) = query.breakdowns
    assert (prop.ours, prop.prop_key) == ("prop", "is_customer")
    assert query.order_by == (("time:day", "asc"), ("event:props:is_customer", "desc"))
    assert query.unsupported == ()


def test_docs_example_pagination() -> None:
    # docs example: pagination-query.json
    query = ok(
        body(
            metrics=["visitors", "events", "pageviews"],
            dimensions=["visit:utm_medium", "visit:utm_source"],
            include={"total_rows": True},
            pagination={"limit": 3, "offset": 1},
        )
    )
    assert (query.limit, query.offset, query.include.total_rows) == (3, 1, True)
    # Two dimensions that are not a value and its parent: a Breakdown and its `then`.
    assert query.unsupported == ()


def test_docs_example_behavioral_filters() -> None:
    # docs example: behavioral-filters-query.json
    query = ok(
        {
            "site_id": "dummy.site",
            "metrics": ["visitors"],
            "date_range": "all",
            "filters": [
                ["is", "event:goal", ["Signup"]],
                ["has_done", ["is", "event:page", ["/pricing"]]],
            ],
        }
    )
    goal, behavioral = query.filters
    assert isinstance(goal, ApiCondition) and goal.dimension.ours == "goal"
    assert isinstance(behavioral, ApiHasDone) and not behavioral.negated
    assert query.unsupported == ()  # goals are answered, inside has_done too


def test_docs_example_imports() -> None:
    # docs example: imports-bad-filter-query.json
    query = ok(
        {
            "site_id": "dummy.site",
            "metrics": ["visitors"],
            "date_range": "all",
            "dimensions": ["visit:source"],
            "filters": [["is", "visit:country_name", ["Estonia"]]],
            "include": {"imports": True},
        }
    )
    assert query.include.imports


def test_docs_examples_segment_and_revenue_are_clear_errors() -> None:
    # docs examples: filtering-by-segment-query.json, revenue-metrics-query.json
    with pytest.raises(
        ApiRequestError, match=r"^#/filters/0: Segments are not supported"
    ) as segment:
        ok(
            {
                "site_id": "dummy.site",
                "metrics": ["visitors", "events"],
                "filters": [["is", "segment", [2]]],
                "date_range": "7d",
            }
        )
    assert segment.value.field == "#/filters/0"
    with pytest.raises(ApiRequestError, match=r"^#/metrics/0: Revenue metrics are not supported"):
        ok(
            {
                "site_id": "dummy.site",
                "metrics": ["total_revenue"],
                "date_range": "all",
                "dimensions": ["event:goal"],
            }
        )


def dimension_of(name: str) -> Any:
    found = dimension(name)
    assert found is not None
    return found


# --- date_range, in UTC --------------------------------------------------------------


@pytest.mark.parametrize(
    ("date_range", "first", "last"),
    [
        ("day", date(2021, 5, 5), date(2021, 5, 5)),
        ("7d", date(2021, 4, 28), date(2021, 5, 4)),
        ("10d", date(2021, 4, 25), date(2021, 5, 4)),
        ("28d", date(2021, 4, 7), date(2021, 5, 4)),
        ("30d", date(2021, 4, 5), date(2021, 5, 4)),
        ("91d", date(2021, 2, 3), date(2021, 5, 4)),
        ("month", date(2021, 5, 1), date(2021, 5, 31)),
        ("3mo", date(2021, 2, 1), date(2021, 4, 30)),
        ("6mo", date(2020, 11, 1), date(2021, 4, 30)),
        ("12mo", date(2020, 5, 1), date(2021, 4, 30)),
        ("year", date(2021, 1, 1), date(2021, 12, 31)),
        ("all", date(2020, 1, 1), date(2021, 5, 5)),
    ],
)
def test_date_range_forms_in_utc(date_range: str, first: date, last: date) -> None:
    query = ok(body(date_range=date_range))
    assert query.date_range == date_range
    assert local_days(query) == (first, last)
    assert query.period.timezone == "UTC"
    assert query.period.start == datetime(first.year, first.month, first.day, tzinfo=UTC)


def test_all_without_a_first_day_is_today_and_starts_at_most_the_limit_ago() -> None:
    assert local_days(ok(body(date_range="all"), site=SiteContext("UTC"))) == (NOW.date(),) * 2
    ancient = ok(body(date_range="all"), site=SiteContext("UTC", date(1990, 1, 1)))
    assert local_days(ancient) == (NOW.date() - timedelta(days=3659), NOW.date())
    future = ok(body(date_range="all"), site=SiteContext("UTC", date(2030, 1, 1)))
    assert local_days(future) == (NOW.date(),) * 2


def test_custom_datetime_range_includes_its_last_second() -> None:
    # Plausible's parser test: "-07:00" offsets, kept as instants.
    query = ok(body(date_range=["2024-08-29T07:12:34-07:00", "2024-08-29T10:12:34-07:00"]))
    assert query.period.start == datetime(2024, 8, 29, 14, 12, 34, tzinfo=UTC)
    assert query.period.end == datetime(2024, 8, 29, 17, 12, 35, tzinfo=UTC)
    zulu = ok(body(date_range=["2024-01-01T00:00:00Z", "2024-01-02T23:59:59Z"]))
    assert (zulu.period.start, zulu.period.end) == (
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 3, tzinfo=UTC),
    )


# --- date_range, in America/New_York across DST changes --------------------------------


@pytest.mark.parametrize(
    ("date_range", "now", "first", "last", "hours"),
    [
        # Clocks go forward on 2025-03-09 and back on 2025-11-02.
        ("day", "2025-03-09 15:00", date(2025, 3, 9), date(2025, 3, 9), 23),
        ("day", "2025-11-02 15:00", date(2025, 11, 2), date(2025, 11, 2), 25),
        ("day", "2025-03-10 02:00", date(2025, 3, 9), date(2025, 3, 9), 23),  # 22:00 local
        ("7d", "2025-03-12 15:00", date(2025, 3, 5), date(2025, 3, 11), 7 * 24 - 1),
        ("28d", "2025-03-12 15:00", date(2025, 2, 12), date(2025, 3, 11), 28 * 24 - 1),
        ("30d", "2025-11-10 15:00", date(2025, 10, 11), date(2025, 11, 9), 30 * 24 + 1),
        ("91d", "2025-04-01 15:00", date(2024, 12, 31), date(2025, 3, 31), 91 * 24 - 1),
        ("month", "2025-03-15 15:00", date(2025, 3, 1), date(2025, 3, 31), 31 * 24 - 1),
        ("month", "2025-11-15 15:00", date(2025, 11, 1), date(2025, 11, 30), 30 * 24 + 1),
        ("6mo", "2025-11-15 15:00", date(2025, 5, 1), date(2025, 10, 31), 184 * 24),
        ("12mo", "2025-11-15 15:00", date(2024, 11, 1), date(2025, 10, 31), 365 * 24),
        ("year", "2025-06-01 15:00", date(2025, 1, 1), date(2025, 12, 31), 365 * 24),
        ("all", "2025-03-12 15:00", date(2025, 3, 1), date(2025, 3, 12), 12 * 24 - 1),
    ],
)
def test_date_range_forms_in_new_york(
    date_range: str, now: str, first: date, last: date, hours: int
) -> None:
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    query = ok(body(date_range=date_range), site=SiteContext(NEW_YORK, date(2025, 3, 1)), now=at)
    assert query.period.timezone == NEW_YORK
    assert local_days(query) == (first, last)
    assert real_hours(query) == hours
    tz = ZoneInfo(NEW_YORK)
    assert query.period.start.astimezone(tz).replace(tzinfo=None) == datetime(
        first.year, first.month, first.day
    )


def test_custom_ranges_in_new_york_across_the_spring_change() -> None:
    site = SiteContext(NEW_YORK)
    days = ok(body(date_range=["2025-03-08", "2025-03-10"]), site=site)
    assert real_hours(days) == 3 * 24 - 1
    assert days.period.start == datetime(2025, 3, 8, 5, tzinfo=UTC)  # midnight EST
    assert days.period.end == datetime(2025, 3, 11, 4, tzinfo=UTC)  # midnight EDT
    # 01:30 EST to 03:30 EDT is one real hour (and the last second).
    times = ok(
        body(date_range=["2025-03-09T01:30:00-05:00", "2025-03-09T03:30:00-04:00"]), site=site
    )
    assert real_hours(times) * 3600 == 3600 + 1
    assert times.period.start.utcoffset() == timedelta(hours=-5)
    assert times.period.end.utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize(
    ("date_range", "interval"),
    [
        ("day", "hour"),
        ("7d", "day"),
        ("30d", "day"),
        ("month", "day"),
        ("91d", "week"),
        ("year", "week"),
        ("all", "month"),
    ],
)
def test_plain_time_dimension_takes_plausibles_bucket(date_range: str, interval: str) -> None:
    site = SiteContext("UTC", date(2019, 1, 1))
    query = ok(
        body(date_range=date_range, dimensions=["time"], order_by=[["time", "asc"]]), site=site
    )
    assert query.time_dimension is not None
    assert (query.time_dimension.name, query.time_dimension.interval) == ("time", interval)


# --- filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operator", ["is", "is_not", "contains", "contains_not", "matches", "matches_not"]
)
def test_every_operator(operator: str) -> None:
    query = ok(body(filters=[[operator, "event:name", ["Signup"]]]))
    assert query.filters == (ApiCondition(operator, dimension_of("event:name"), ("Signup",)),)  # type: ignore[arg-type]


@pytest.mark.parametrize("operator", ["is", "is_not", "contains", "contains_not"])
def test_case_sensitive_modifier(operator: str) -> None:
    query = ok(
        body(
            filters=[
                [operator, "event:page", ["/Foo"], {"case_sensitive": False}],
                [operator, "event:page", ["/a"], {}],
            ]
        )
    )
    first, second = query.filters
    assert isinstance(first, ApiCondition) and first.case_sensitive is False
    assert isinstance(second, ApiCondition) and second.case_sensitive is True


def test_logical_and_behavioral_operators_nest() -> None:
    # Plausible's parser test "valid nested `not`, `and` and `or`", and has_not_done.
    query = ok(
        body(
            filters=[
                [
                    "or",
                    [
                        [
                            "and",
                            [
                                ["is", "visit:city_name", ["Tallinn"]],
                                ["is", "visit:country", ["EE"]],
                            ],
                        ],
                        ["not", ["is", "visit:country", ["EE"]]],
                    ],
                ],
                [
                    "has_not_done",
                    ["or", [["is", "event:goal", ["Signup"]], ["is", "event:page", ["/signup"]]]],
                ],
            ]
        )
    )
    either, never = query.filters
    assert isinstance(either, ApiOr)
    inner_and, negation = either.filters
    assert isinstance(inner_and, ApiAnd) and len(inner_and.filters) == 2
    assert isinstance(negation, ApiNot) and isinstance(negation.filter, ApiCondition)
    assert isinstance(never, ApiHasDone) and never.negated and isinstance(never.filter, ApiOr)
    # event:goal inside has_not_done is allowed (Plausible: only the top level, or behavioral).
    assert "#/filters/1" not in {u.field for u in query.unsupported}


def test_custom_property_and_city_ids() -> None:
    query = ok(
        body(filters=[["is", "event:props:plan", ["pro"]], ["is", "visit:city", [588409, 4347778]]])
    )
    prop, city = query.filters
    assert isinstance(prop, ApiCondition) and (prop.dimension.ours, prop.dimension.prop_key) == (
        "prop",
        "plan",
    )
    assert isinstance(city, ApiCondition) and city.clauses == ("588409", "4347778")
    assert query.unsupported == ()  # GeoNames ids: stored since sql/0021_place_codes.sql


def test_every_plausible_dimension_name_is_accepted() -> None:
    for name, info in PLAUSIBLE_DIMENSIONS.items():
        assert info.ours is None or info.ours in DIMENSIONS
        metrics = ["visits"]  # visits goes with any dimension
        query = ok(body(metrics=metrics, dimensions=[name], filters=[["contains", name, ["x"]]]))
        assert query.dimensions[0].name == name
        assert query.dimensions[0].ours == info.ours
    assert dimension_of("visit:utm_source").ours == "utm_source"
    assert dimension_of("visit:country").ours == "country"
    assert dimension_of("event:page").ours == "page"
    assert dimension_of("event:goal").ours == "goal" and not dimension_of("event:goal").planned
    assert dimension_of("visit:channel").ours == "channel"
    assert dimension_of("event:hostname").ours == "hostname"
    assert dimension_of("visit:entry_page_hostname").ours == "entry_page_hostname"
    assert not any(dimension_of(name).planned for name in PLAUSIBLE_DIMENSIONS)


# --- validation errors: each names its field -------------------------------------------

ERRORS: list[tuple[object, str, str]] = [
    # (body, field, a phrase of the message)
    (["not", "an object"], "#", "Expected Object but got Array"),
    ({"metrics": ["visitors"], "date_range": "7d"}, "#/site_id", "Required property"),
    (body(site_id=7), "#/site_id", "Expected String but got Integer"),
    ({"site_id": "a.b", "metrics": ["visitors"]}, "#/date_range", "Required property"),
    (body(date="2021-05-05"), "#/date", "does not allow additional properties"),
    (body(metrics="visitors"), "#/metrics", "Expected Array but got String"),
    (body(metrics=[]), "#/metrics", "minimum of 1 items"),
    (body(metrics=["visitors", "visssitors"]), "#/metrics/1", 'Invalid metric "visssitors"'),
    (body(metrics=["events", "visitors", "visitors"]), "#/metrics", "unique"),
    (body(metrics=["exit_rate"]), "#/metrics/0", "Invalid metric"),
    (body(metrics=["visitors", "average_revenue"]), "#/metrics/1", "Revenue metrics"),
    (body(date_range="foo"), "#/date_range", 'Invalid date range "foo"'),
    (body(date_range="-1d"), "#/date_range", "Invalid date range"),
    (body(date_range="0d"), "#/date_range", "1 to 3660 days"),
    (body(date_range="4000d"), "#/date_range", "1 to 3660 days"),
    (body(date_range="999999999mo"), "#/date_range", "Invalid date range"),
    (body(date_range="101mo"), "#/date_range", "1 to 100 months"),
    (body(date_range="24h"), "#/date_range", "Invalid date range"),
    (body(date_range=7), "#/date_range", "a string or a list"),
    (body(date_range=["2021-02-03T00:00:00Z", "2021-02-04"]), "#/date_range", "two dates"),
    (body(date_range=["2021-02-03T00:00:00", "2021-02-03T23:59:59"]), "#/date_range", "offset"),
    (
        body(date_range=["2021-02-03T00:00:00-25:00", "2021-02-03T23:59:59-25:00"]),
        "#/date_range",
        "offset",
    ),
    (body(date_range=["2021-02-30", "2021-03-01"]), "#/date_range", "not a valid date"),
    (body(date_range=["2021-03-02", "2021-03-01"]), "#/date_range", "before the first day"),
    (
        body(date_range=["2021-03-02T00:00:00Z", "2021-03-01T00:00:00Z"]),
        "#/date_range",
        "before the start",
    ),
    (body(date_range=["2000-01-01", "2021-03-01"]), "#/date_range", "more than picolytics' 3660"),
    (body(date_range=["2021-01-01"]), "#/date_range", "two dates or two times"),
    (body(dimensions="foobar"), "#/dimensions", "Expected Array but got String"),
    (body(dimensions=["visitors"]), "#/dimensions/0", 'Invalid dimension "visitors"'),
    (body(dimensions=["visit:source", "time:minute"]), "#/dimensions/1", "Invalid dimension"),
    (body(dimensions=["event:props:"]), "#/dimensions/0", "Invalid dimension"),
    (body(dimensions=["event:name", "event:name"]), "#/dimensions", "unique"),
    (body(dimensions=["time:day", "time"]), "#/dimensions/1", "one time dimension"),
    (body(filters="foobar"), "#/filters", "Expected Array but got String"),
    (body(filters=[["is", "event:name", "foo"]]), "#/filters/0", "clauses must be a list"),
    (body(filters=[["exists?", "event:name", ["foo"]]]), "#/filters/0", "unknown operator"),
    (
        body(filters=[["matches_wildcard", "event:name", ["foo"]]]),
        "#/filters/0",
        "unknown operator",
    ),
    (body(filters=[["is", "visit:name", ["foo"]]]), "#/filters/0", "unknown filter dimension"),
    (body(filters=[["is", "time:day", ["2021-01-01"]]]), "#/filters/0", "unknown filter dimension"),
    (body(filters=[["is", "visit:os_version", [123]]]), "#/filters/0", "clauses are strings"),
    (body(filters=[["is", "visit:country", ["USA"]]]), "#/filters/0", "2-letter country code"),
    (body(filters=[["is_not", "event:goal", ["Signup"]]]), "#/filters/0", "is and contains"),
    (
        body(filters=[["matches", "event:page", ["/a"], {"case_sensitive": False}]]),
        "#/filters/0",
        "no modifiers",
    ),
    (body(filters=[["is", "event:page", ["/a"], {"case": False}]]), "#/filters/0", "only modifier"),
    (
        body(filters=[["is", "event:page", ["/a"], {"case_sensitive": "no"}]]),
        "#/filters/0",
        "true or false",
    ),
    (body(filters=[["is", "event:page", []]]), "#/filters/0", "1 to 100 clauses"),
    (body(filters=[["is", "event:page", ["/"] * 101]]), "#/filters/0", "1 to 100 clauses"),
    (body(filters=[["is", "event:page", ["a\x00b"]]]), "#/filters/0", "no NUL"),
    (body(filters=[["matches", "event:page", ["(a)\\1"]]]), "#/filters/0", "back-reference"),
    (body(filters=[["matches", "event:page", ["a" * 300]]]), "#/filters/0", "256 characters"),
    (
        body(filters=[["has_done", ["has_not_done", ["is", "visit:browser", ["Chrome"]]]]]),
        "#/filters/0/1",
        "cannot be nested",
    ),
    (
        body(filters=[["has_done", ["is", "visit:browser", ["Chrome"]]]]),
        "#/filters/0/1",
        "event dimension filters",
    ),
    (
        body(filters=[["not", ["is", "event:hostname", ["a.plausible.io"]]]]),
        "#/filters/0/1",
        "`event:hostname` can only be filtered at the top level",
    ),
    (
        body(filters=[["or", [["is", "event:name", ["x"]], ["is", "event:goal", ["Signup"]]]]]),
        "#/filters/0/1/1",
        "`event:goal` can only be filtered at the top level",
    ),
    (
        body(
            metrics=["conversion_rate"],
            dimensions=["event:goal"],
            filters=[["not", ["is", "event:props:foo", ["bar"]]]],
        ),
        "#/filters/0/1",
        "custom property filters can only be used on top level",
    ),
    (
        body(filters=[["is", "event:page", [str(n)]] for n in range(21)]),
        "#/filters",
        "At most 20 conditions",
    ),
    (
        body(filters=[["or", [["is", "event:page", [str(n)]] for n in range(21)]]]),
        "#/filters/0",
        "At most 20 conditions",
    ),
    (
        body(
            filters=[
                [
                    "not",
                    [
                        "not",
                        ["not", ["not", ["not", ["not", ["not", ["is", "event:page", ["/"]]]]]]],
                    ],
                ]
            ]
        ),
        "#/filters/0/1/1/1/1/1/1/1",
        "nest at most 7 levels",
    ),
    (body(order_by="visitors"), "#/order_by", "Expected Array but got String"),
    (body(order_by=[["visssss", "desc"]]), "#/order_by/0/0", 'Invalid value in order_by "visssss"'),
    (body(order_by=[["visitors", "up"]]), "#/order_by/0/1", "asc or desc"),
    (body(order_by=[["visitors"]]), "#/order_by/0", "Invalid order_by entry"),
    (
        body(order_by=[["visitors", "asc"], ["events", "desc"]]),
        "#/order_by/1",
        "not a queried metric or dimension",
    ),
    (body(order_by=[["event:name", "desc"]]), "#/order_by/0", "not a queried metric or dimension"),
    (body(include="foobar"), "#/include", "Expected Object but got String"),
    (
        body(include={"comparisons": {"mode": "previous_period"}}),
        "#/include/comparisons",
        "additional properties",
    ),
    (
        body(include={"total_rows": "yes"}),
        "#/include/total_rows",
        "Expected Boolean but got String",
    ),
    (body(include={"time_labels": True}), "#/include/time_labels", "requires a time dimension"),
    (body(pagination={"limit": 100_000}), "#/pagination/limit", "<= 10000"),
    (body(pagination={"limit": 0}), "#/pagination/limit", ">= 1"),
    (body(pagination={"offset": -5}), "#/pagination/offset", ">= 0"),
    (body(pagination={"limit": "10"}), "#/pagination/limit", "Expected Integer but got String"),
    (body(pagination={"limit": True}), "#/pagination/limit", "Expected Integer but got Boolean"),
    (body(pagination={"limit": 1.5}), "#/pagination/limit", "Expected Integer but got Number"),
    (body(pagination={"page": 2}), "#/pagination/page", "additional properties"),
    (body(pagination=[10]), "#/pagination", "Expected Object but got Array"),
    (
        body(metrics=["conversion_rate"]),
        "#/metrics/0",
        "`conversion_rate` can only be queried with event:goal",
    ),
    (
        body(
            metrics=["visitors", "group_conversion_rate"],
            filters=[["has_done", ["is", "event:goal", ["Signup"]]]],
        ),
        "#/metrics/1",
        "event:goal",
    ),
    (
        body(metrics=["scroll_depth"], filters=[["not", ["is", "event:page", ["/"]]]]),
        "#/metrics/0",
        "event:page filters or dimensions",
    ),
    (
        body(metrics=["time_on_page"], filters=[["has_done", ["is", "event:page", ["/"]]]]),
        "#/metrics/0",
        "event:page filters or dimensions",
    ),
    (
        body(metrics=["views_per_visit"], filters=[["is", "event:page", ["/"]]]),
        "#/metrics/0",
        "cannot be queried with a filter on `event:page`",
    ),
    (
        body(metrics=["views_per_visit"], dimensions=["event:name"]),
        "#/metrics/0",
        "cannot be queried with `dimensions`",
    ),
    (body(metrics=["percentage"]), "#/metrics/0", "requires non-empty `dimensions`"),
    (
        body(metrics=["bounce_rate"], dimensions=["event:props:foo"]),
        "#/dimensions",
        "Session metric(s) `bounce_rate` cannot be queried along with event dimension(s) "
        "`event:props:foo`",
    ),
    (
        body(metrics=["visit_duration"], dimensions=["event:page", "event:name"]),
        "#/dimensions",
        "Session metric(s)",
    ),
    (
        body(metrics=["events"], dimensions=["visit:exit_page"]),
        "#/dimensions",
        "Event metric(s) `events` cannot be queried along with session dimension(s) "
        "`visit:exit_page`",
    ),
]


@pytest.mark.parametrize(
    ("query_body", "field", "phrase"), ERRORS, ids=[f"{e[1]}:{e[2][:30]}" for e in ERRORS]
)
def test_validation_errors_name_the_field(query_body: object, field: str, phrase: str) -> None:
    with pytest.raises(ApiRequestError) as caught:
        ok(query_body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert phrase in str(caught.value)
    assert isinstance(caught.value, PicolyticsError)


@pytest.mark.parametrize(
    "short",
    [
        [],
        ["and"],
        ["or"],
        ["and", []],
        ["or", []],
        ["not"],
        ["is_not"],
        ["is_not", "event:name"],
        ["has_done"],
        ["has_not_done"],
        [7, "event:name", ["x"]],
    ],
)
def test_too_short_filters(short: list[object]) -> None:
    # Plausible's parser test "errors on too short filter".
    with pytest.raises(ApiRequestError, match=r"^#/filters/0: Invalid filter"):
        ok(body(filters=[short]))


@pytest.mark.parametrize(
    "long",
    [
        ["and", [["is", "event:props:foobar", ["value"]]], "extra"],
        ["not", ["is", "event:props:foobar", ["value"]], 1],
        ["is", "event:props:foobar", ["value"], {}, True],
    ],
)
def test_too_long_filters(long: list[object]) -> None:
    # Plausible's parser test "errors on too long filter".
    with pytest.raises(ApiRequestError, match=r"^#/filters/0: Invalid filter"):
        ok(body(filters=[long]))


def test_plausible_allows_these() -> None:
    # Session metrics by event:page alone, and with an event filter (Plausible's tests),
    # are valid (by page, those of the visits that entered on it).
    assert ok(body(metrics=["bounce_rate"], dimensions=["event:page"])).unsupported == ()
    assert (
        ok(
            body(metrics=["bounce_rate"], filters=[["is", "event:props:foo", ["(none)"]]])
        ).unsupported
        == ()
    )
    assert ok(body(metrics=["bounce_rate"], dimensions=["visit:device"])).unsupported == ()
    assert ok(
        body(metrics=["conversion_rate"], filters=[["is", "event:goal", ["Signup"]]])
    ).metrics == ("conversion_rate",)
    assert ok(body(metrics=["scroll_depth"], dimensions=["event:page"])).unsupported == ()
    assert ok(
        body(metrics=["views_per_visit"], filters=[["is", "event:goal", ["Signup"]]])
    ).metrics == ("views_per_visit",)
    # A value with its parent is one breakdown of ours (Row.parent).
    assert ok(body(dimensions=["visit:country", "visit:city_name"])).unsupported == ()
    assert ok(body(dimensions=["visit:browser_version", "visit:browser"])).unsupported == ()


def test_requested_site_and_frozen_query() -> None:
    assert requested_site(body()) == "dummy.site"
    with pytest.raises(ApiRequestError, match=r"^#/site_id: "):
        requested_site({"site_id": "  "})
    query = ok(body())
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.limit = 5  # type: ignore[misc]


def test_messages_show_at_most_a_bounded_part_of_the_body() -> None:
    deep: object = "x" * 10_000
    for _ in range(500):
        deep = [deep, {"k": deep}]
    assert len(show(deep)) <= 160
    with pytest.raises(ApiRequestError) as caught:
        ok(body(filters=[["is", "event:page", [deep]]]))
    assert len(str(caught.value)) < 400


# --- fuzz ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
WORDS = st.sampled_from(
    [*API_METRICS, *PLAUSIBLE_DIMENSIONS, "event:props:plan", "time", "time:day", "time:minute",
     "segment", "is", "is_not", "contains", "matches", "and", "or", "not", "has_done",
     "has_not_done", "asc", "desc", "day", "7d", "6mo", "all", "2024-01-01", "2024-01-31",
     "2024-01-01T00:00:00+02:00", "US", "case_sensitive", "limit", "offset", "time_labels"]
)  # fmt: skip
NEAR = st.recursive(
    WORDS | st.integers(-3, 20_000) | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(WORDS, inner, max_size=3),
    max_leaves=30,
)
LEAF = st.tuples(
    st.sampled_from(["is", "is_not", "contains", "contains_not", "matches", "matches_not"]),
    st.sampled_from([*PLAUSIBLE_DIMENSIONS, "event:props:plan"]),
    st.lists(st.text(max_size=4) | st.integers(0, 99), min_size=1, max_size=3),
).map(list)
TREE = st.recursive(
    LEAF,
    lambda inner: (
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=1, max_size=3)).map(list)
        | st.tuples(st.sampled_from(["not", "has_done", "has_not_done"]), inner).map(list)
    ),
    max_leaves=8,
)
PLAIN_METRICS = ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"]
DIMENSION_NAMES = st.sampled_from([*PLAUSIBLE_DIMENSIONS, "event:props:plan", "time", "time:week"])


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` three times in four, else something near valid (to reach every check)."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda v: valid if v else NEAR)


BODIES = st.fixed_dictionaries(
    {
        "site_id": st.just("dummy.site"),
        "metrics": mostly(
            st.lists(st.sampled_from(PLAIN_METRICS), min_size=1, max_size=3, unique=True)
            | st.lists(st.sampled_from(API_METRICS), min_size=1, max_size=2, unique=True)
        ),
        "date_range": mostly(st.sampled_from(["day", "7d", "month", "12mo", "year", "all", "91d"])),
    },
    optional={
        "dimensions": mostly(st.lists(DIMENSION_NAMES, max_size=2, unique=True)),
        "filters": mostly(st.lists(TREE, max_size=3)),
        "order_by": mostly(
            st.lists(st.tuples(WORDS, st.sampled_from(["asc", "desc"])).map(list), max_size=2)
        ),
        "include": mostly(
            st.dictionaries(
                st.sampled_from(["time_labels", "total_rows", "imports"]), st.booleans()
            )
        ),
        "pagination": mostly(
            st.dictionaries(st.sampled_from(["limit", "offset"]), st.integers(-2, 20_000))
        ),
    },
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses_or_refuses(query_body: object, timezone: str) -> None:
    try:
        query = parse(query_body, site=SiteContext(timezone, date(2024, 2, 29)), now=NOW)
    except ApiRequestError as error:
        assert str(error).startswith(f"{error.field}: ")
        assert error.field.startswith("#")
        return
    assert isinstance(query, ApiQuery)
    assert query.period.start < query.period.end
    assert 1 <= query.limit <= 10_000 and query.offset >= 0
    assert len({d.name for d in query.dimensions}) == len(query.dimensions)
    assert sum(d.grain == "time" for d in query.dimensions) <= 1


@FUZZ
@given(JSON, st.sampled_from(["UTC", NEW_YORK]))
def test_fuzz_any_json_parses_or_raises_api_request_error(
    query_body: object, timezone: str
) -> None:
    parses_or_refuses(query_body, timezone)


@FUZZ
@given(BODIES, st.sampled_from(["UTC", NEW_YORK, "Asia/Kolkata"]))
def test_fuzz_near_valid_bodies_parse_or_raise_api_request_error(
    query_body: dict[str, object], timezone: str
) -> None:
    parses_or_refuses(query_body, timezone)


# --- goals and conversion rates, before any SQL (api/v2_translate.py, v2_conversions.py) ---


def test_the_plan_of_conversion_rates() -> None:
    signup = ["is", "event:goal", ["Signup"]]
    pro = ["is", "event:props:plan", ["pro"]]
    chrome = ["is", "visit:browser", ["Chrome"]]
    query = ok(
        body(
            metrics=["visitors", "conversion_rate", "group_conversion_rate"],
            dimensions=["visit:source"],
            filters=[signup, pro, chrome, ["not", ["is", "visit:country", ["US"]]]],
            pagination={"limit": 5, "offset": 2},
        )
    )
    plan = translate(query, (7,))
    assert plan.main.metrics == ("visitors",)
    assert plan.main.breakdown == Breakdown("source")
    assert plan.main.filters == And(
        (
            Condition("goal", "is", ("Signup",)),
            Condition("prop", "is", ("pro",), "plan"),
            Condition("browser", "is", ("Chrome",)),
            Not(Condition("country", "is", ("US",))),
        )
    )
    assert (plan.main.order_by, plan.main.limit, plan.main.offset) == (
        (("visitors", "desc"),),
        5,
        2,
    )
    # The denominators: no top-level goal or property condition; the others stay.
    kept = And((Condition("browser", "is", ("Chrome",)), Not(Condition("country", "is", ("US",)))))
    assert plan.conversion_totals == Query((7,), query.period, ("visitors",), filters=kept)
    assert plan.group_totals == Query(
        (7,), query.period, ("visitors",), breakdown=Breakdown("source"), filters=kept
    )
    assert plan.totals is None and plan.order_after == ()
    # Ordered by the rate of each group: every row, ordered and paged after the division.
    by_rate = translate(
        dataclasses.replace(query, order_by=(("group_conversion_rate", "desc"),)), (7,)
    )
    assert (by_rate.main.order_by, by_rate.main.limit, by_rate.main.offset) == ((), None, 0)
    assert by_rate.order_after == (("group_conversion_rate", "desc"),)
    by_goal = translate(ok(body(metrics=["conversion_rate"], dimensions=["event:goal"])), (7,))
    assert by_goal.main.breakdown == Breakdown("goal")
    assert by_goal.group_totals is None
    assert by_goal.conversion_totals == Query((7,), by_goal.main.period, ("visitors",))


def test_goals_answered_and_not() -> None:
    signup = ["is", "event:goal", ["Signup"]]
    assert ok(body(dimensions=["event:goal"], filters=[signup])).unsupported == ()
    by_device = ok(
        body(
            metrics=["visitors", "pageviews", "events"],
            dimensions=["visit:device"],
            filters=[signup],
        )
    )
    assert [u.field for u in by_device.unsupported] == ["#/metrics/1", "#/metrics/2"]
    assert by_device.unsupported[0].reason.startswith(
        "pageviews by visit:device with an event:goal"
    )
    # Without a goal filter, or by an event dimension, those counts are answered.
    assert ok(body(metrics=["events"], dimensions=["visit:device"])).unsupported == ()
    assert (
        ok(body(metrics=["events"], dimensions=["event:page"], filters=[signup])).unsupported == ()
    )
    assert ok(body(metrics=["events"], filters=[signup])).unsupported == ()


def test_is_goal_filters_name_the_sites_goals() -> None:
    query = ok(
        body(
            filters=[
                ["contains", "event:goal", ["Nope"]],
                ["is", "event:goal", ["signup"], {"case_sensitive": False}],
                ["is", "event:goal", ["Signup", "Visit /a"]],
            ]
        )
    )
    assert names_goals(query)
    check_goal_names(query, {"Signup", "Visit /a"})
    with pytest.raises(ApiRequestError) as error:
        check_goal_names(query, {"Signup"})
    assert str(error.value) == (
        "#/filters/2: Invalid filters. The goal `Visit /a` is not configured for this site."
    )
    assert not names_goals(ok(body(filters=[["contains", "event:goal", ["x"]]])))


@pytest.mark.parametrize(
    ("part", "whole", "shown"),
    [
        (2, 3, 66.7),
        (1, 3, 33.3),
        (1, 8, 12.5),
        (1, 16, 6.2),  # 6.25: half to even
        (3, 16, 18.8),  # 18.75
        (1, 2000, 0.0),  # 0.05 exactly (a float's 0.05 is a little more: round() says 0.1)
        (3, 2000, 0.2),  # 0.15
        (5, 4, 125.0),
        (0, 7, 0.0),
        (3, 0, 0.0),
    ],
)
def test_rates_are_rounded_half_to_even_from_the_counts(
    part: int, whole: int, shown: float
) -> None:
    assert percent(part, whole) == shown
    assert isinstance(percent(part, whole), float)


def test_rows_ordered_by_a_rate() -> None:
    def row(value: str | None, visitors: int, day: int = 1) -> Row:
        return Row(date(2024, 1, day), "", value, {"visitors": visitors})

    rows = [row("b", 1), row("a", 2), row(None, 3), row("c", 4), row("d", 1, day=2)]
    groups = {group_key(r): 4 for r in rows}  # every group has 4 visitors
    by_rate = ordered(rows, [("group_conversion_rate", "asc")], lambda r: group_rate(r, groups))
    # Ties (25 %) by time, then value; None last.
    assert [(r.value, r.time.day) for r in by_rate] == [  # type: ignore[union-attr]
        ("b", 1), ("d", 2), ("a", 1), (None, 1), ("c", 1)
    ]  # fmt: skip
    by_value = ordered(rows, [("value", "desc")], lambda r: 0.0)
    assert [r.value for r in by_value] == ["d", "c", "b", "a", None]
    by_time = ordered(rows, [("time", "desc"), ("visitors", "desc")], lambda r: 0.0)
    assert [r.value for r in by_time] == ["d", "c", None, "a", "b"]
