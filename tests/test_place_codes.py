"""Place codes (issue #18, sql/0021_place_codes.sql): the region's ISO 3166-2 code and
the city's GeoNames id of each visit, read from a MaxMind-layout GeoIP file, stored,
rolled up, queried, and answered as Plausible's visit:region and visit:city.

The locations come from MaxMind's own test database (tests/data/GeoIP2-City-Test.mmdb):

  visit visitor  events (UTC, 2024-03-05)        first event's place        browser
  V1    1        10:00 /, 10:05 /a (from Sweden)  London GB-ENG 2643743      Chrome
  V2    2        11:00 / (bounce)                 Milton US-WA 5803556       Chrome
  V3    3        12:00 /, 12:01 /b                Linköping SE-E 2694762     Firefox
  V4    4        13:00 /                          Berlin, no codes (as before 0021)
  V5    1        14:00 / (bounce)                 London GB-ENG 2643743      Firefox
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from helpers.database import query
from helpers.events import LOCATION, event, run, write
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.dimensions import Dimension
from picolytics.enrich.geo import GeoLocator, _location_from_record
from picolytics.events import UNKNOWN_LOCATION, Agent, Location, QueuedEvent
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Breakdown, Condition, Period, Query, Result
from picolytics.storage import api_keys
from picolytics.storage.rollup import roll_day

DATA = Path(__file__).parent / "data"
CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
MIGRATION = Path(__file__).parents[1] / "sql" / "0021_place_codes.sql"
SITE = "places.test"
DAY = date(2024, 3, 5)
PERIOD = Period(datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))
FIREFOX = Agent("Firefox", "120", "Linux", "", "desktop", None)
LONDON = Location("GB", "England", "London", "GB-ENG", "2643743")
MILTON = Location("US", "Washington", "Milton", "US-WA", "5803556")
LINKOPING = Location("SE", "Östergötland County", "Linköping", "SE-E", "2694762")
CODES: tuple[tuple[Dimension, str], ...] = (
    ("region_code", "region_code"),
    ("city_code", "city_code"),
)
VISIT_METRICS = ("visitors", "visits", "pageviews", "bounces")


def at(clock: str) -> datetime:
    return datetime.fromisoformat(f"2024-03-05T{clock}+00:00")


def visit_event(
    clock: str, visitor: int, location: Location, path: str = "/", agent: Agent | None = None
) -> QueuedEvent:
    found = replace(event(at(clock), visitor, path=path, site=SITE), location=location)
    return found if agent is None else replace(found, agent=agent)


def located(locator: GeoLocator, ip: str) -> Location:
    found = locator.lookup(ip)
    assert found is not UNKNOWN_LOCATION, ip
    return found


def dataset() -> list[QueuedEvent]:
    locator = GeoLocator(CITY_DB)
    try:
        london = located(locator, "81.2.69.160")
        milton = located(locator, "216.160.83.56")
        linkoping = located(locator, "89.160.20.112")
    finally:
        locator.close()
    return [
        visit_event("10:00", 1, london),
        visit_event("10:05", 1, linkoping, "/a"),  # the visit keeps its first place
        visit_event("11:00", 2, milton),
        visit_event("12:00", 3, linkoping, agent=FIREFOX),
        visit_event("12:01", 3, linkoping, "/b", agent=FIREFOX),
        visit_event("13:00", 4, LOCATION),  # no codes: as every visit before 0021
        visit_event("14:00", 1, london, agent=FIREFOX),  # 4 h later: a second visit
    ]


@pytest.fixture(scope="module")
def conninfo(module_database: str) -> str:
    run(write(module_database, dataset()))
    return module_database


SITE_ID = "SELECT site_id FROM sites WHERE domain = %s"


def ask(conninfo: str, *, rollups: bool = True, **fields: Any) -> Result:
    async def go() -> Result:
        async with await AsyncConnection.connect(conninfo) as connection:
            (site_id,) = (await (await connection.execute(SITE_ID, (SITE,))).fetchone()) or ()
            found = Query(site_ids=(site_id,), period=PERIOD, **fields)
            return await run_query(connection, found, use_rollups=rollups)

    return run(go())


def by_pair(result: Result) -> dict[tuple[str | None, str | None], dict[str, Any]]:
    return {
        (row.parent, row.value): {str(name): value for name, value in row.metrics.items()}
        for row in result.rows
    }


def execute(conninfo: str, statements: str) -> None:
    """Statements without parameters, several at once (as migrations run)."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(statements.encode())


async def _roll(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute("SELECT site_id FROM sites")
        for (site_id,) in await cursor.fetchall():
            await roll_day(connection, site_id, DAY, "UTC")


# --- what GeoIP gives ---------------------------------------------------------------------


def test_the_maxmind_layout_gives_iso_3166_2_codes_and_geonames_ids() -> None:
    locator = GeoLocator(CITY_DB)
    try:
        assert locator.lookup("81.2.69.160") == LONDON
        assert locator.lookup("216.160.83.56") == MILTON
        assert locator.lookup("89.160.20.112") == LINKOPING
        # Two subdivisions: the largest one's code, as its name.
        boxford = locator.lookup("2.125.160.216")
        assert (boxford.region, boxford.region_code) == ("England", "GB-ENG")
        assert boxford.city_code == "2655045"
        # A country-level record has no codes.
        assert locator.lookup("2001:218::") == Location("JP", "", "", "", "")
    finally:
        locator.close()


def test_codes_that_are_not_iso_or_geonames_shaped_are_left_empty() -> None:
    def codes(record: dict[str, Any]) -> tuple[str, str]:
        found = _location_from_record(record)
        return found.region_code, found.city_code

    good = {"country": {"iso_code": "us"}, "subdivisions": [{"iso_code": "ca"}],
            "city": {"geoname_id": 5391959}}  # fmt: skip
    assert codes(good) == ("US-CA", "5391959")
    for subdivision in ("CALI", "", "C-A", "C\x00", 7, None):
        record = good | {"subdivisions": [{"iso_code": subdivision}]}
        assert codes(record)[0] == "", subdivision
    assert codes(good | {"country": {"iso_code": "USA"}})[0] == ""  # no country, no code
    assert codes(good | {"subdivisions": "CA"})[0] == ""
    for geoname_id in (0, -5, True, "5391959", 5.0, None):
        assert codes(good | {"city": {"geoname_id": geoname_id}})[1] == "", geoname_id
    # The flat @ip-location-db layout, as DB-IP lite without ids, carries no codes.
    flat = {"country_code": "US", "state1": "California", "city": "San Francisco"}
    assert codes(flat) == ("", "")


# --- what is stored -------------------------------------------------------------------------


def test_the_writer_stores_the_first_events_codes_per_visit(conninfo: str) -> None:
    stored = query(
        conninfo,
        "SELECT visitor_id, started_at, country, region, city, region_code, city_code "
        "FROM sessions ORDER BY started_at",
    )
    assert [row[2:] for row in stored] == [
        ("GB", "England", "London", "GB-ENG", "2643743"),
        ("US", "Washington", "Milton", "US-WA", "5803556"),
        ("SE", "Östergötland County", "Linköping", "SE-E", "2694762"),
        ("DE", "Berlin", "Berlin", "", ""),
        ("GB", "England", "London", "GB-ENG", "2643743"),
    ]


# --- the query layer ------------------------------------------------------------------------


def plain_visits(conninfo: str, column: str, where: str = "true") -> dict[Any, dict[str, Any]]:
    rows = query(
        conninfo,
        f"""SELECT country, {column}, count(DISTINCT visitor_id), count(*), sum(pageviews),
                   count(*) FILTER (WHERE bounce)
            FROM sessions WHERE site_id = (SELECT site_id FROM sites WHERE domain = %s)
              AND pageviews > 0 AND {where} GROUP BY 1, 2""",
        (SITE,),
    )
    return {(r[0], r[1]): dict(zip(VISIT_METRICS, r[2:], strict=True)) for r in rows}


def test_breakdowns_and_filters_equal_plain_sql(conninfo: str) -> None:
    for dimension, column in CODES:
        found = by_pair(ask(conninfo, metrics=VISIT_METRICS, breakdown=Breakdown(dimension)))
        assert found == plain_visits(conninfo, column), dimension
    cities = by_pair(
        ask(conninfo, metrics=("visitors", "visits"), breakdown=Breakdown("city_code"))
    )
    assert cities[("GB", "2643743")] == {"visitors": 1, "visits": 2}
    assert cities[("DE", "")] == {"visitors": 1, "visits": 1}
    london = Condition("city_code", "is", ("2643743",))
    pages = ask(conninfo, metrics=("visitors", "visits"), filters=london).rows[0].metrics
    (expected,) = query(
        conninfo, "SELECT count(DISTINCT visitor_id), count(*) FROM sessions "
        "WHERE pageviews > 0 AND city_code = '2643743'",
    )  # fmt: skip
    assert (pages["visitors"], pages["visits"]) == expected == (1, 2)
    regions = Condition("region_code", "matches", ("^(US|SE)-",))
    found = by_pair(
        ask(conninfo, metrics=VISIT_METRICS, breakdown=Breakdown("city_code"), filters=regions)
    )
    assert found == plain_visits(conninfo, "city_code", "region_code ~ '^(US|SE)-'")
    assert set(found) == {("US", "5803556"), ("SE", "2694762")}


# Plain breakdowns, a filter on the code itself, and segment filters (country is the
# segment of its own codes' parent; browser splits visitor 1 across two values).
ROLLED: list[dict[str, Any]] = [
    {"metrics": VISIT_METRICS, "breakdown": Breakdown("region_code")},
    {"metrics": VISIT_METRICS, "breakdown": Breakdown("city_code"), "interval": "day"},
    {
        "metrics": ("visitors",),
        "breakdown": Breakdown("region_code"),
        "filters": Condition("region_code", "is", ("GB-ENG", "")),
    },
    {
        "metrics": VISIT_METRICS,
        "breakdown": Breakdown("city_code"),
        "filters": Condition("country", "is", ("GB", "DE")),
    },
    {
        "metrics": VISIT_METRICS,
        "breakdown": Breakdown("region_code"),
        "filters": Condition("browser", "is", ("Chrome", "Firefox")),
    },
]


def test_the_rollups_answer_as_the_raw_rows(conninfo: str) -> None:
    raw = [ask(conninfo, rollups=False, **fields) for fields in ROLLED]
    run(_roll(conninfo))
    for fields, before in zip(ROLLED, raw, strict=True):
        after = ask(conninfo, **fields)
        assert after.rows == before.rows, fields
        assert after.path == "rollup", fields


def test_days_rolled_before_the_migration_answer_as_their_raw_rows(
    migrated_database: str,
) -> None:
    """Such a day has no code rows; 0021 adds its country rows under '' (every old code)."""
    us = Location("US", "Illinois", "Springfield")
    old = [
        visit_event("10:00", 1, LOCATION),
        visit_event("10:30", 2, us),
        visit_event("11:00", 2, us, "/x"),
        visit_event("15:00", 2, us, agent=FIREFOX),  # visitor 2 split over two browsers
        visit_event("16:00", 3, LOCATION, agent=FIREFOX),
    ]
    run(write(migrated_database, old))
    run(_roll(migrated_database))
    execute(
        migrated_database,
        "".join(
            f"DELETE FROM {table} WHERE dimension IN ('region_code', 'city_code');"
            for table in ("rollup_visits", "rollup_segment_visits", "rollup_segment_splits")
        ),
    )
    cases: list[dict[str, Any]] = [
        {"metrics": VISIT_METRICS, "breakdown": Breakdown("region_code")},
        {"metrics": VISIT_METRICS, "breakdown": Breakdown("city_code")},
        {
            "metrics": VISIT_METRICS,
            "breakdown": Breakdown("city_code"),
            "filters": Condition("country", "is", ("US",)),
        },
        {
            "metrics": VISIT_METRICS,
            "breakdown": Breakdown("region_code"),
            "filters": Condition("browser", "is", ("Chrome", "Firefox")),
        },
        {
            "metrics": ("visitors",),
            "breakdown": Breakdown("region_code"),
            "filters": Condition("source", "is", ("(direct)",)),
        },
    ]
    raw = [ask(migrated_database, rollups=False, **fields).rows for fields in cases]
    assert all(rows and {row.value for row in rows} == {""} for rows in raw)
    assert {row.parent for row in raw[0]} == {"DE", "US"}  # one row per country
    assert [ask(migrated_database, **fields).rows for fields in cases] != raw  # as rolled
    backfill = MIGRATION.read_text()
    execute(migrated_database, backfill[backfill.index("INSERT INTO") :])
    for fields, rows in zip(cases, raw, strict=True):
        answer = ask(migrated_database, **fields)
        assert (answer.rows, answer.path) == (rows, "rollup"), fields


# --- the Stats API --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(conninfo: str) -> tuple[TestClient, str]:
    key = api_keys.connected(conninfo, lambda c: api_keys.create(c, "places", ())).clear
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=conninfo)), key


def v2(api: tuple[TestClient, str], **fields: Any) -> list[tuple[list[Any], list[Any]]]:
    client, key = api
    body = {"site_id": SITE, "date_range": ["2024-03-05", "2024-03-05"], **fields}
    response = client.post(
        "/api/v2/query", content=json.dumps(body), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return [(r["dimensions"], r["metrics"]) for r in response.json()["results"]]


def v1(api: tuple[TestClient, str], endpoint: str, **params: str) -> Any:
    client, key = api
    params = {"site_id": SITE, "period": "custom", "date": "2024-03-05,2024-03-05", **params}
    response = client.get(
        f"/api/v1/stats/{endpoint}?{urlencode(params)}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_v2_api_answers_visit_region_and_visit_city(api: tuple[TestClient, str]) -> None:
    regions = v2(api, metrics=["visitors", "visits"], dimensions=["visit:region"])
    assert sorted(regions) == [([""], [1, 1]), (["GB-ENG"], [1, 2]), (["SE-E"], [1, 1]),
                               (["US-WA"], [1, 1])]  # fmt: skip
    # Plausible's city filter takes GeoNames ids as integers; the ids come back as text.
    cities = v2(
        api,
        metrics=["visits"],
        dimensions=["visit:country", "visit:city"],
        filters=[["is", "visit:city", [2643743, 5803556]]],
    )
    assert sorted(cities) == [(["GB", "2643743"], [2]), (["US", "5803556"], [1])]
    named = v2(
        api,
        metrics=["visitors"],
        dimensions=["visit:city_name"],
        filters=[["is_not", "visit:region", ["GB-ENG", ""]]],
    )
    assert sorted(named) == [(["Linköping"], [1]), (["Milton"], [1])]


def test_the_v1_api_answers_visit_region_and_visit_city(api: tuple[TestClient, str]) -> None:
    cities = v1(api, "breakdown", property="visit:city", metrics="visitors,visits")
    assert sorted(cities["results"], key=lambda r: r["city"]) == [
        {"city": "", "visitors": 1, "visits": 1},
        {"city": "2643743", "visitors": 1, "visits": 2},
        {"city": "2694762", "visitors": 1, "visits": 1},
        {"city": "5803556", "visitors": 1, "visits": 1},
    ]
    total = v1(api, "aggregate", metrics="visits", filters="visit:region==US-WA|SE-E")
    assert total["results"] == {"visits": {"value": 2}}
    regions = v1(api, "breakdown", property="visit:region", filters="visit:city==2643743")
    assert regions["results"] == [{"region": "GB-ENG", "visitors": 1}]
