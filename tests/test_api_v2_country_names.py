"""`visit:country_name` in the Stats API v2 (api/v2_names.py, api/v2_countries.py,
picolytics/data/country_names.json), through the real app on a real database.

Site names.test, 10 January 2024 (UTC), one visit per visitor, each in one country:

  visitor  1  2  3  4  5  6  7  8        9
  country  US US GB DE CD CG CH (unknown) EU (a code the name list lacks)

CD and CG share the alias "Congo"; names shown are the list's first (official) ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers.events import event, run, write
from starlette.testclient import TestClient

from picolytics.api.v2_countries import contained
from picolytics.api.v2_names import country_codes, country_name, country_names
from picolytics.config import Config
from picolytics.events import Location
from picolytics.serve.app import create_app
from picolytics.stats.validate import MAX_VALUES
from picolytics.storage import api_keys

SITE = "names.test"
URL = "/api/v2/query"
COUNTRIES = ["US", "US", "GB", "DE", "CD", "CG", "CH", "", "EU"]
CITY = {"US": "Springfield", "DE": "Berlin"}
SHOWN = {
    "United States of America": 2,
    "United Kingdom": 1,
    "Germany": 1,
    "Democratic Republic of the Congo": 1,
    "Republic of the Congo": 1,
    "Switzerland": 1,
    "(not set)": 1,
    "EU": 1,
}


@pytest.fixture(scope="module")
def client(module_database: str) -> tuple[TestClient, str]:
    at = datetime(2024, 1, 10, 9, 0, tzinfo=UTC)
    events = [
        replace(
            event(at, visitor, site=SITE),
            location=Location(code, "", CITY.get(code, "")),
        )
        for visitor, code in enumerate(COUNTRIES, start=1)
    ]
    run(write(module_database, events))
    key = api_keys.connected(module_database, lambda c: api_keys.create(c, "all", ())).clear
    app = create_app(Config(api_rate_limit=0), conninfo=module_database)
    return TestClient(app), key


def post(client: tuple[TestClient, str], **fields: Any) -> Any:
    test_client, key = client
    query = {"site_id": SITE, "metrics": ["visitors"], "date_range": ["2024-01-10", "2024-01-10"]}
    return test_client.post(
        URL,
        content=json.dumps(query | fields),
        headers={"Authorization": f"Bearer {key}"},
    )


def visitors(client: tuple[TestClient, str], *filters: list[Any]) -> int:
    response = post(client, filters=list(filters))
    assert response.status_code == 200, response.text
    [row] = response.json()["results"]
    return int(row["metrics"][0])


def by_name(client: tuple[TestClient, str], **fields: Any) -> dict[str, int]:
    response = post(client, dimensions=["visit:country_name"], **fields)
    assert response.status_code == 200, response.text
    return {row["dimensions"][0]: row["metrics"][0] for row in response.json()["results"]}


def test_the_shipped_names_cover_every_code() -> None:
    names = country_names()
    assert len(names) >= 249  # ISO 3166-1 has 249 codes
    assert all(len(code) == 2 and code.isupper() for code in names)
    assert all(names[code] for code in names)
    assert country_name("DE") == "Germany"
    assert country_name("") == "(not set)"
    assert country_name("EU") == "EU"  # not a country of the list: shown as stored
    assert set(country_codes("Congo")) == {"CD", "CG"}
    assert country_codes("United States") == country_codes("United States of America") == ("US",)
    assert country_codes("germany") == ()
    assert country_codes("germany", case_sensitive=False) == ("DE",)


def test_a_breakdown_spells_codes_as_names(client: tuple[TestClient, str]) -> None:
    assert by_name(client) == SHOWN
    response = post(client, dimensions=["visit:country_name", "visit:city_name"])
    found = {tuple(row["dimensions"]) for row in response.json()["results"]}
    assert ("United States of America", "Springfield") in found
    assert ("Germany", "Berlin") in found


def test_is_and_is_not_look_names_up(client: tuple[TestClient, str]) -> None:
    name = "visit:country_name"
    assert visitors(client, ["is", name, ["United States", "Germany"]]) == 3
    assert visitors(client, ["is", name, ["United States of America"]]) == 2
    assert visitors(client, ["is", name, ["Congo"]]) == 2  # both Congos
    assert visitors(client, ["is_not", name, ["Congo"]]) == 7
    assert visitors(client, ["is", name, ["(not set)"]]) == 1
    assert visitors(client, ["is", name, ["germany"]]) == 0
    assert visitors(client, ["is", name, ["germany"], {"case_sensitive": False}]) == 1
    assert visitors(client, ["is", name, ["Atlantis"]]) == 0  # no such country
    assert visitors(client, ["is_not", name, ["Atlantis"]]) == 9
    assert visitors(client, ["not", ["is", name, ["Germany"]]]) == 8
    either = ["or", [["is", name, ["Germany"]], ["is", "visit:country", ["GB"]]]]
    assert visitors(client, either) == 2


def test_contains_is_evaluated_over_the_names(client: tuple[TestClient, str]) -> None:
    name = "visit:country_name"
    assert visitors(client, ["contains", name, ["Republic"]]) == 2  # CD, CG
    assert visitors(client, ["contains_not", name, ["Republic"]]) == 7
    assert visitors(client, ["contains", name, ["united"]]) == 0
    assert visitors(client, ["contains", name, ["united"], {"case_sensitive": False}]) == 3
    assert visitors(client, ["contains", name, ["not set"]]) == 1
    assert visitors(client, ["contains", name, ["Republic"]]) == visitors(
        client, ["is", "visit:country", ["CD", "CG"]]
    )
    assert by_name(client, filters=[["contains", name, ["Congo"]]]) == {
        "Democratic Republic of the Congo": 1,
        "Republic of the Congo": 1,
    }


def test_more_codes_than_a_condition_holds(client: tuple[TestClient, str]) -> None:
    # More than MAX_VALUES countries have an "a" in their name: several conditions.
    assert len(contained(("a",), False)) > MAX_VALUES
    name = "visit:country_name"
    # US, DE, CD, CH (GB, CG, the unknown country and EU have none).
    assert visitors(client, ["contains", name, ["a"], {"case_sensitive": False}]) == 5
    assert visitors(client, ["contains_not", name, ["a"], {"case_sensitive": False}]) == 4


def test_matches_runs_in_postgresql(client: tuple[TestClient, str]) -> None:
    name = "visit:country_name"
    assert visitors(client, ["matches", name, ["^(Germany|Switzerland)$"]]) == 2
    assert visitors(client, ["matches_not", name, ["^(Germany|Switzerland)$"]]) == 7
    assert visitors(client, ["matches", name, ["^United", "Congo$"]]) == 5
    started = time.monotonic()  # Python's re would backtrack for minutes on this one
    assert visitors(client, ["matches", name, ["(.|.)*zq"]]) == 0
    assert time.monotonic() - started < 10
    response = post(client, filters=[["matches", name, ["a{2,1}"]]])
    assert response.status_code == 400
    assert response.json()["error"].startswith("#/filters: invalid regular expression")


def test_region_and_city_codes_are_answered(client: tuple[TestClient, str]) -> None:
    """Since sql/0021_place_codes.sql (tests/test_place_codes.py): these visits were
    stored without codes, so they have the code ''."""
    for dimension in ("visit:region", "visit:city"):
        response = post(client, dimensions=[dimension])
        assert response.status_code == 200, response.text
        assert {tuple(r["dimensions"]) for r in response.json()["results"]} == {("",)}
