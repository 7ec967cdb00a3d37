"""Each rule said once, and SQL and Python agreeing on it (migration 0005).

Which events are pageviews and which are custom events is decided twice by nature:
in Python (events.py) when the writer counts a visit's pageviews, and in SQL
(picolytics_is_pageview / picolytics_is_custom_event) when the views select rows.
Here every event name the tracker and /api/event produce goes through the real
parsers and the real writer, and both sides must give the same answer.

The reader's grants are data (`reader_grants`): a migration that adds a view registers
it rather than copying the grant function. An existing database upgrades from 0004.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.database import new_database, query, reader_login
from helpers.events import AGENT, LOCATION, PAGE, event, run, write
from helpers.reporting import READABLE_TABLES, VIEWS
from psycopg.types.json import Jsonb

from picolytics.config.settings import DEFAULT_EVENT_NAMES
from picolytics.events import (
    BUILTIN_NAMES,
    PAGEVIEW_NAMES,
    EventNames,
    PageEvent,
    QueuedEvent,
    is_custom_event,
    new_id,
)
from picolytics.ingest.collect import parse_event
from picolytics.ingest.plausible import parse_plausible_event
from picolytics.resources import sql_dir
from picolytics.storage import migrate

NAMES = EventNames(frozenset(DEFAULT_EVENT_NAMES), re.compile(r"[A-Za-z0-9 _:-]+"))
URL = "https://example.com/docs"
ROUTE = URL + "#/install"
ANCHOR = URL + "#section"
FIRST_VISITOR = 7000
RULE_FUNCTIONS = ["picolytics_is_pageview(text, text)", "picolytics_is_custom_event(text)"]
SECRETS = [
    "daily_salts",
    "visitor_sessions",
    "schema_migrations",
    "reader_grants",
    "tls_accounts",
    "tls_certificates",
    "tls_challenges",
]


def tracker(name: str, url: str = URL, **fields: Any) -> PageEvent:
    """What POST /p makes of a pico.js event."""
    return parse_event(json.dumps({"n": name, "l": url, **fields}).encode(), NAMES)


def plausible(name: str, url: str = URL, **fields: Any) -> PageEvent:
    """What POST /api/event makes of a Plausible tracker's event."""
    body = {"n": name, "u": url, "d": "example.com", **fields}
    return parse_plausible_event(json.dumps(body).encode(), NAMES)


def cases() -> list[tuple[str, PageEvent]]:
    found = [(f"/p {name}", tracker(name)) for name in DEFAULT_EVENT_NAMES]
    # Any name Python counts as built in, should it ever not be a default one.
    found += [
        (f"built-in {name}", replace(PAGE, name=name))
        for name in sorted(BUILTIN_NAMES - set(DEFAULT_EVENT_NAMES))
    ]
    found += [
        ("/p hashchange to a #/route", tracker("hashchange", ROUTE)),
        ("/p hashchange to a #!/route", tracker("hashchange", URL + "#!/install")),
        ("/p hashchange to an anchor", tracker("hashchange", ANCHOR)),
        ("/p hashchange to a token", tracker("hashchange", URL + "#access_token=x")),
        ("/p load of a #/route", tracker("load", ROUTE)),
        ("/p nav to a #/route", tracker("nav", ROUTE)),
        ("/p ping on a #/route", tracker("ping", ROUTE)),
        ("/p visible on a #/route", tracker("visible", ROUTE)),
        ("/p outbound", tracker("outbound", p={"url": "https://other.example/x?q=1"})),
        ("/p download on a #/route", tracker("download", ROUTE, p={"url": URL + ".pdf"})),
        ("/p custom", tracker("signup", p={"plan": "pro"})),
        ("/p custom on a #/route", tracker("signup", ROUTE)),
        ("/p custom named like Plausible's", tracker("Signup Form")),
        ("/api/event pageview", plausible("pageview")),
        ("/api/event pageview in hash mode", plausible("pageview", ANCHOR, h=1)),
        ("/api/event pageview of an anchor", plausible("pageview", ANCHOR)),
        ("/api/event hashchange in hash mode", plausible("hashchange", ANCHOR, h=1)),
        ("/api/event hashchange of an anchor", plausible("hashchange", ANCHOR)),
        ("/api/event engagement", plausible("engagement", e=45_000, sd=80)),
        ("/api/event short engagement", plausible("engagement", e=1_000)),
        ("/api/event outbound", plausible("Outbound Link: Click", p={"url": URL})),
        ("/api/event download", plausible("File Download", p={"url": URL + ".zip"})),
        ("/api/event custom", plausible("404", p={"path": "/gone"})),
        ("/api/event non-interactive custom", plausible("Video Play", i=False)),
    ]
    return found


@dataclass(frozen=True)
class Seeded:
    conninfo: str  # as the migrating superuser
    reader: str  # a login role that is only a member of picolytics_reader
    events: dict[int, tuple[str, QueuedEvent]]  # by visitor id: one visit per case


@pytest.fixture(scope="module")
def seeded(module_database: str, admin_conninfo: str) -> Iterator[Seeded]:
    now = datetime.now(UTC)
    events: dict[int, tuple[str, QueuedEvent]] = {}
    for number, (label, page) in enumerate(cases()):
        visitor = FIRST_VISITOR + number
        events[visitor] = (label, QueuedEvent(now, new_id(), visitor, None, page, LOCATION, AGENT))
    run(write(module_database, [queued for _, queued in events.values()]))
    for reader in reader_login(admin_conninfo, module_database):
        yield Seeded(module_database, reader, events)


def visitors(conninfo: str, sql: str) -> set[int]:
    return {int(row[0]) for row in query(conninfo, sql)}


# --- the event rules: SQL and Python agree -------------------------------------------


def test_views_and_python_agree_on_every_event(seeded: Seeded) -> None:
    in_pageviews = visitors(seeded.reader, "SELECT visitor_id FROM pageviews")
    in_custom_events = visitors(seeded.reader, "SELECT visitor_id FROM custom_events")
    disagreements = {
        f"{label} ({queued.page.name!r}, {queued.path!r})": {
            "pageview": (queued.is_pageview, visitor in in_pageviews),
            "custom event": (is_custom_event(queued.page.name), visitor in in_custom_events),
        }
        for visitor, (label, queued) in seeded.events.items()
        if (queued.is_pageview, is_custom_event(queued.page.name))
        != (visitor in in_pageviews, visitor in in_custom_events)
    }
    assert disagreements == {}  # (Python, SQL) for each event where they differ
    # Both answers occur, so the comparison above is not vacuous.
    assert 0 < len(in_pageviews) < len(seeded.events)
    assert 0 < len(in_custom_events) < len(seeded.events)
    assert not in_pageviews & in_custom_events


def test_expected_answers_for_the_tricky_events(seeded: Seeded) -> None:
    """Pins the rule itself, so that both sides changing together is noticed too."""
    answers = {
        label: (queued.is_pageview, is_custom_event(queued.page.name))
        for label, queued in seeded.events.values()
    }
    assert answers["/p hashchange to a #/route"] == (True, False)
    assert answers["/p hashchange to an anchor"] == (False, False)
    assert answers["/p hashchange to a token"] == (False, False)
    assert answers["/api/event hashchange in hash mode"] == (True, False)
    assert answers["/p load of a #/route"] == (True, False)
    assert answers["/api/event pageview"] == (True, False)
    assert answers["/p ping on a #/route"] == (False, False)
    assert answers["/api/event engagement"] == (False, False)
    assert answers["/p outbound"] == (False, True)
    assert answers["/api/event download"] == (False, True)
    assert answers["/api/event non-interactive custom"] == (False, True)


def test_visits_count_the_pageviews_the_view_shows(seeded: Seeded) -> None:
    """sessions.pageviews comes from Python's rule (the writer), the pageviews view
    from SQL's: a visit's pageviews, entry and exit page must match its rows."""
    from_view = {
        int(visitor): (int(count), str(path))
        for visitor, count, path in query(
            seeded.reader,
            "SELECT visitor_id, count(*), min(path) FROM pageviews GROUP BY visitor_id",
        )
    }
    from_visits = {
        int(visitor): (int(pageviews), str(entry))
        for visitor, pageviews, entry in query(
            seeded.reader, "SELECT visitor_id, pageviews, entry_path FROM visits"
        )
    }
    assert from_visits == from_view
    ((sessions,),) = query(
        seeded.conninfo, "SELECT count(*) FROM sessions WHERE visitor_id >= %s", (FIRST_VISITOR,)
    )
    assert sessions == len(seeded.events)


def _string_literals(conninfo: str, function: str) -> set[str]:
    ((definition,),) = query(conninfo, "SELECT pg_get_functiondef(%s::regprocedure)", (function,))
    body = str(definition).split("$function$")[1]
    return {literal for literal in re.findall(r"'([^']*)'", body) if literal != "#"}


def test_sql_rules_name_the_python_sets(module_database: str) -> None:
    assert _string_literals(module_database, RULE_FUNCTIONS[0]) == set(PAGEVIEW_NAMES)
    assert _string_literals(module_database, RULE_FUNCTIONS[1]) == set(BUILTIN_NAMES)


def test_no_view_restates_the_rules(module_database: str) -> None:
    """A view selects pageviews or custom events through the functions, never by
    listing the names again."""
    definitions = dict(
        query(
            module_database,
            "SELECT viewname::text, definition FROM pg_views WHERE schemaname = current_schema()",
        )
    )
    restating = {
        view: name
        for view, definition in definitions.items()
        for name in sorted(BUILTIN_NAMES - {"engagement"})
        if f"'{name}'" in definition
    }
    assert restating == {}
    assert "picolytics_is_pageview(e.name, e.path)" in definitions["pageviews"]
    assert "picolytics_is_custom_event(e.name)" in definitions["custom_events"]


@pytest.mark.parametrize("view", ["pageviews", "custom_events"])
def test_rules_are_inlined_into_the_views(seeded: Seeded, view: str) -> None:
    """The planner sees the expression, not a function call: same plans as before."""
    plan = "\n".join(
        str(row[0])
        for row in query(seeded.reader, f"EXPLAIN (VERBOSE) SELECT count(*) FROM {view}")
    )
    assert "picolytics_is" not in plan
    assert "hashchange" in plan


def test_views_work_without_execute_for_public(migrated_database: str, admin_conninfo: str) -> None:
    """Views call the rule functions with the reader's privileges: the reader is granted
    EXECUTE itself, so an administrator revoking it from PUBLIC breaks nothing."""
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        for function in RULE_FUNCTIONS:
            connection.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    run(write(migrated_database, [event(datetime.now(UTC), 1, name="signup")]))
    for reader in reader_login(admin_conninfo, migrated_database):
        assert query(reader, "SELECT count(*) FROM pageviews") == [(0,)]
        assert query(reader, "SELECT name FROM custom_events") == [("signup",)]


# --- the reader's grants, as data ----------------------------------------------------


def registered(conninfo: str, privilege: str) -> list[str]:
    rows = query(
        conninfo,
        "SELECT object FROM reader_grants WHERE privilege = %s ORDER BY object",
        (privilege,),
    )
    return [str(row[0]) for row in rows]


def granted_relations(conninfo: str) -> list[str]:
    rows = query(
        conninfo,
        "SELECT table_name FROM information_schema.role_table_grants "
        "WHERE grantee = 'picolytics_reader' AND privilege_type = 'SELECT' ORDER BY 1",
    )
    return [str(row[0]) for row in rows]


def granted_functions(conninfo: str) -> list[str]:
    rows = query(
        conninfo,
        "SELECT p.oid::regprocedure::text FROM pg_proc p, aclexplode(p.proacl) a "
        "WHERE a.grantee = 'picolytics_reader'::regrole AND a.privilege_type = 'EXECUTE' "
        "ORDER BY 1",
    )
    return [str(row[0]) for row in rows]


def canonical(conninfo: str, functions: list[str]) -> list[str]:
    """Function signatures as PostgreSQL spells them: "f(text,text)"."""
    rows = query(conninfo, "SELECT f::regprocedure::text FROM unnest(%s::text[]) f", (functions,))
    return sorted(str(row[0]) for row in rows)


def test_reader_is_granted_exactly_the_registered_objects(seeded: Seeded) -> None:
    assert registered(seeded.conninfo, "SELECT") == sorted(VIEWS + READABLE_TABLES)
    assert granted_relations(seeded.conninfo) == registered(seeded.conninfo, "SELECT")
    assert registered(seeded.conninfo, "EXECUTE") == sorted(RULE_FUNCTIONS)
    assert granted_functions(seeded.conninfo) == canonical(seeded.conninfo, RULE_FUNCTIONS)


def test_reader_cannot_read_or_change_the_list(seeded: Seeded) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(seeded.reader, "SELECT * FROM reader_grants")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(seeded.reader, "INSERT INTO reader_grants VALUES ('daily_salts', 'SELECT')")


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_cannot_be_registered(migrated_database: str, secret: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        query(migrated_database, "INSERT INTO reader_grants VALUES (%s, 'SELECT')", (secret,))


def test_an_unknown_object_fails_the_grant(migrated_database: str) -> None:
    """A misspelt or dropped name fails the migration that caused it."""
    with psycopg.connect(migrated_database) as connection:
        connection.execute("INSERT INTO reader_grants VALUES ('no_such_view', 'SELECT')")
        with pytest.raises(psycopg.errors.UndefinedTable):
            connection.execute("SELECT picolytics_grant_reader()")


def test_a_later_migration_only_registers_its_view(
    fresh_database: str, admin_conninfo: str, tmp_path: Path
) -> None:
    for path in sql_dir().glob("*.sql"):
        shutil.copy(path, tmp_path)
    (tmp_path / "0999_extra.sql").write_text(
        "CREATE VIEW extra_pages AS SELECT site, path, count(*) AS pageviews\n"
        "FROM pageviews GROUP BY 1, 2;\n"
        "INSERT INTO reader_grants (object, privilege) VALUES ('extra_pages', 'SELECT');\n"
        "SELECT picolytics_grant_reader();\n"
    )
    migrate.apply(fresh_database, tmp_path)
    run(write(fresh_database, [event(datetime.now(UTC), 1, path="/a")]))
    for reader in reader_login(admin_conninfo, fresh_database):
        assert query(reader, "SELECT site, path, pageviews FROM extra_pages") == [
            ("example.com", "/a", 1)
        ]
    assert "extra_pages" in granted_relations(fresh_database)


# --- upgrading a database that has 0001 to 0004 --------------------------------------


def copy_rows(source: str, target: str) -> None:
    """sites, sessions and events of `source` into `target`: the columns `target` has
    and does not generate itself."""
    stored_columns = (
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
        " AND table_schema = current_schema() AND is_generated = 'NEVER'"
        " ORDER BY ordinal_position"
    )
    with psycopg.connect(source) as reading, psycopg.connect(target) as writing:
        for table in ("sites", "sessions", "events"):
            columns = [c for (c,) in writing.execute(stored_columns, (table,)).fetchall()]
            listed = ", ".join(columns)
            rows = reading.execute(f"SELECT {listed} FROM {table}").fetchall()
            identity = " OVERRIDING SYSTEM VALUE" if table == "sites" else ""
            marks = ", ".join(["%s"] * len(columns))
            with writing.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} ({listed}){identity} VALUES ({marks})",
                    [tuple(Jsonb(v) if isinstance(v, dict) else v for v in row) for row in rows],
                )


def test_upgrade_from_0004_keeps_views_rows_and_grants(
    fresh_database: str, admin_conninfo: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = [m for m in migrate.discover() if m.version <= 4]
    assert [m.version for m in old] == [1, 2, 3, 4]
    for migration in old:
        shutil.copy(migration.path, tmp_path)
    migrate.apply(fresh_database, tmp_path)
    assert query(fresh_database, "SELECT to_regclass('reader_grants')") == [(None,)]

    now = datetime.now(UTC)
    s = timedelta(seconds=1)
    # Today's writer needs today's schema: write there, then copy the rows across, as
    # a database of the 0004 days would hold them.
    with new_database(admin_conninfo) as current:
        migrate.apply(current)
        run(
            write(
                current,
                [
                    event(now, 1, name="load", path="/"),
                    event(now + s, 1, name="hashchange", path="/", hash_path="#/app"),
                    event(now + 2 * s, 1, name="hashchange", path="/"),  # an anchor
                    event(now + 3 * s, 1, name="ping", path="/"),
                    event(now + 4 * s, 1, name="signup", path="/", props={"plan": "pro"}),
                    event(now + 5 * s, 2, name="visible", path="/"),
                ],
            )
        )
        copy_rows(current, fresh_database)
    snapshot = {
        "pageviews": "SELECT name, path FROM pageviews ORDER BY time",
        "custom_events": "SELECT name, path, props FROM custom_events ORDER BY time",
        "visits": "SELECT visitor_id, pageviews, bounce FROM visits ORDER BY visitor_id",
        "conversion_pages": "SELECT name, path, visits, page_visits FROM conversion_pages "
        "ORDER BY 1, 2",
    }

    def read_all() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for reader in reader_login(admin_conninfo, fresh_database):
            found = {name: query(reader, sql) for name, sql in snapshot.items()}
        return found

    before, grants_before = read_all(), granted_relations(fresh_database)
    assert before["pageviews"] == [("load", "/"), ("hashchange", "/#/app")]

    with caplog.at_level(logging.WARNING, logger=migrate.__name__):
        applied = migrate.apply(fresh_database)
    assert [m.version for m in applied] == [m.version for m in migrate.discover()][4:]
    assert applied[0].version == 5
    assert "changed after it was applied" not in caplog.text
    assert read_all() == before
    assert set(grants_before) <= set(granted_relations(fresh_database))
    assert granted_relations(fresh_database) == sorted(VIEWS + READABLE_TABLES)
    assert granted_functions(fresh_database) == canonical(fresh_database, RULE_FUNCTIONS)
    # The views were replaced in place: their comments survive.
    assert query(
        fresh_database,
        "SELECT obj_description(to_regclass(v), 'pg_class') IS NOT NULL "
        "FROM unnest(ARRAY['pageviews', 'custom_events']) AS v",
    ) == [(True,), (True,)]
    assert query(
        fresh_database,
        "SELECT has_function_privilege('public', 'picolytics_grant_reader()', 'EXECUTE')",
    ) == [(False,)]
