"""Goals (docs/goals.md): `picolytics goal add`, `list` and `remove` (cli/goals.py,
storage/goals.py, sql/0010_goals.sql), and the rule that matches events to goals
(stats/goals.py), each on a real PostgreSQL: the wildcard translation is checked by
PostgreSQL's own `~`, against a table of cases and against a plain glob matcher.
"""

from __future__ import annotations

import functools
import json
import shutil
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers.database import query, reader_login
from helpers.events import event, run, write
from helpers.processes import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection

from picolytics.cli import cli
from picolytics.errors import GoalOptionError
from picolytics.resources import sql_dir
from picolytics.stats.goals import goal_condition, load_goals, page_regex
from picolytics.stats.sql import Params
from picolytics.storage import goals, migrate

SITE, OTHER = "example.com", "other.org"


def add_sites(conninfo: str, *domains: str) -> None:
    with psycopg.connect(conninfo) as connection:
        for domain in domains:
            connection.execute("INSERT INTO sites (domain) VALUES (%s)", (domain,))


@pytest.fixture
def sites(migrated_database: str) -> str:
    add_sites(migrated_database, SITE, OTHER)
    return migrated_database


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """`picolytics ARGS` in this process against a database, from an empty folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def invoke(conninfo: str, *args: str) -> Result:
        env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    yield invoke


def execute(conninfo: str, statement: str) -> None:
    with psycopg.connect(conninfo) as connection:
        connection.execute(statement)


def stored(conninfo: str) -> list[tuple[Any, ...]]:
    return query(
        conninfo,
        "SELECT s.domain, g.kind, g.event_name, g.page_path, g.display_name"
        " FROM goals g JOIN sites s USING (site_id) ORDER BY g.goal_id",
    )


# --- add, list, remove ------------------------------------------------------------------------


def test_add_list_and_remove(sites: str, invoke: Any) -> None:
    added = [
        invoke(sites, "goal", "add", SITE, "--event", "Signup"),
        invoke(sites, "goal", "add", "WWW.Example.COM", "--page", "/blog/**"),
        invoke(sites, "goal", "add", SITE, "--page", " /pricing ", "--name", " Pricing page "),
        invoke(sites, "goal", "add", OTHER, "--page", "/pricing"),
    ]
    assert [(result.exit_code, result.output) for result in added] == [
        (0, "added example.com: goal 'Signup' (event 'Signup')\n"),
        (0, "added example.com: goal 'Visit /blog/**' (page '/blog/**')\n"),
        (0, "added example.com: goal 'Pricing page' (page '/pricing')\n"),
        (0, "added other.org: goal 'Visit /pricing' (page '/pricing')\n"),
    ]
    assert stored(sites) == [
        (SITE, "event", "Signup", None, "Signup"),
        (SITE, "page", None, "/blog/**", "Visit /blog/**"),
        (SITE, "page", None, "/pricing", "Pricing page"),
        (OTHER, "page", None, "/pricing", "Visit /pricing"),
    ]
    listed = invoke(sites, "goal", "list")
    assert (listed.exit_code, listed.output.splitlines()) == (
        0,
        [
            "domain       name            kind   definition",
            "example.com  Signup          event  Signup",
            "example.com  Visit /blog/**  page   /blog/**",
            "example.com  Pricing page    page   /pricing",
            "other.org    Visit /pricing  page   /pricing",
        ],
    )
    one_site = invoke(sites, "goal", "list", OTHER, "--json")
    assert one_site.exit_code == 0, one_site.output
    (document,) = json.loads(one_site.output)
    assert datetime.fromisoformat(document.pop("created_at")).tzinfo is not None
    (goal_id,) = query(sites, "SELECT max(goal_id) FROM goals")[0]
    assert document == {
        "id": goal_id,
        "domain": OTHER,
        "goal_type": "page",
        "display_name": "Visit /pricing",
        "event_name": None,
        "page_path": "/pricing",
    }
    removed = invoke(sites, "goal", "remove", SITE, "Visit /blog/**")
    assert (removed.exit_code, removed.output) == (
        0,
        "removed example.com: goal 'Visit /blog/**' (page '/blog/**')\n",
    )
    assert [row[4] for row in stored(sites)] == ["Signup", "Pricing page", "Visit /pricing"]
    # The same definition may come back once its goal is gone.
    assert invoke(sites, "goal", "add", SITE, "--page", "/blog/**").exit_code == 0


def test_list_without_goals(sites: str, invoke: Any) -> None:
    hint = "no goals yet (add one with `picolytics goal add DOMAIN --event NAME`)\n"
    assert (invoke(sites, "goal", "list").output) == hint
    assert (invoke(sites, "goal", "list", SITE).output) == hint
    assert json.loads(invoke(sites, "goal", "list", "--json").output) == []


LONG = "/" + "x" * 2000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add", "nope.example", "--event", "Signup"],
            "no site 'nope.example' in the database (sites: example.com, other.org)",
        ),
        (
            ["add", SITE, "--event", "Signup"],
            "example.com has a goal for the event 'Signup' already (named 'Signup')",
        ),
        (
            ["add", SITE, "--page", "/pricing"],
            "example.com has a goal for the page '/pricing' already (named 'Pricing')",
        ),
        (
            ["add", SITE, "--event", "Buy", "--name", "Pricing"],
            "example.com has a goal named"
            " 'Pricing' already (page '/pricing'): choose another --name",
        ),
        (
            ["add", SITE, "--event", "/pricing", "--name", "Pricing"],
            "example.com has a goal named 'Pricing' already (page '/pricing'): choose another"
            " --name",
        ),
        (["add", SITE], "give exactly one of --event NAME or --page PATH"),
        (
            ["add", SITE, "--event", "Buy", "--page", "/buy"],
            "give exactly one of --event NAME or --page PATH",
        ),
        (
            ["add", SITE, "--page", "pricing"],
            "--page: 'pricing' does not start with /: a page path is written as Top pages"
            " shows it ('/pricing', not 'pricing' or a whole URL)",
        ),
        (
            ["add", SITE, "--page", "https://example.com/x"],
            "--page: 'https://example.com/x' does not start with /",
        ),
        (["add", SITE, "--page", "  "], "--page: a page path may not be empty"),
        (["add", SITE, "--page", LONG], "--page: a page path may be at most 2000 characters long"),
        (["add", SITE, "--page", "/a\tb"], "--page: a page path may not hold control characters"),
        (["add", SITE, "--event", ""], "--event: an event name may not be empty"),
        (
            ["add", SITE, "--event", "x" * 121],
            "--event: an event name may be at most 120 characters long",
        ),
        (
            ["add", SITE, "--event", "pageview"],
            "--event: 'pageview' is not a custom event (for pageviews use --page PATH)",
        ),
        (["add", SITE, "--event", "load"], "--event: 'load' is not a custom event"),
        (["add", SITE, "--event", "Buy", "--name", " "], "--name: a display name may not be empty"),
        (["list", "nope.example"], "no site 'nope.example' in the database"),
        (
            ["remove", SITE, "Nope"],
            "example.com has no goal named 'Nope' (goals: 'Signup', 'Pricing')",
        ),
        (["remove", SITE, "signup"], "example.com has no goal named 'signup'"),
        (["remove", OTHER, "Signup"], "other.org has no goal named 'Signup' (it has no goals)"),
        (["remove", "nope.example", "Signup"], "no site 'nope.example' in the database"),
    ],
)
def test_refusals(sites: str, invoke: Any, args: list[str], message: str) -> None:
    assert invoke(sites, "goal", "add", SITE, "--event", "Signup").exit_code == 0
    assert (
        invoke(sites, "goal", "add", SITE, "--page", "/pricing", "--name", "Pricing").exit_code == 0
    )
    before = stored(sites)
    result = invoke(sites, "goal", *args)
    assert result.exit_code == 2
    assert result.output.startswith(f"picolytics: error: {message}")
    assert len(result.output.splitlines()) == 1
    assert stored(sites) == before


def test_the_table_refuses_what_the_commands_refuse(sites: str) -> None:
    """The constraints hold also for rows written by other means than storage/goals.py."""
    insert = "INSERT INTO goals (site_id, kind, event_name, page_path, display_name) VALUES"
    bad = [
        f"{insert} (1, 'event', NULL, NULL, 'x')",
        f"{insert} (1, 'event', 'x', '/x', 'x')",
        f"{insert} (1, 'page', 'x', NULL, 'x')",
        f"{insert} (1, 'visit', NULL, '/x', 'x')",
        f"{insert} (1, 'page', NULL, 'x', 'x')",
        f"{insert} (1, 'page', NULL, '/{'x' * 2000}', 'x')",
        f"{insert} (1, 'event', '', NULL, 'x')",
        f"{insert} (1, 'event', 'x', NULL, '')",
    ]
    for statement in bad:
        with pytest.raises(psycopg.errors.CheckViolation):
            execute(sites, statement)
    execute(sites, f"{insert} (1, 'event', 'x', NULL, 'x')")
    for duplicate in [
        f"{insert} (1, 'event', 'x', NULL, 'y')",
        f"{insert} (1, 'page', NULL, '/x', 'x')",
    ]:
        with pytest.raises(psycopg.errors.UniqueViolation):
            execute(sites, duplicate)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        execute(sites, f"{insert} (99, 'event', 'x', NULL, 'x')")
    execute(sites, f"{insert} (2, 'event', 'x', NULL, 'x')")  # another site


def test_remove_by_id(sites: str) -> None:
    with psycopg.connect(sites) as connection:
        kept = goals.add_goal(connection, SITE, goals.definition("Signup", None))
        gone = goals.add_goal(connection, OTHER, goals.definition(None, "/a*"))
        assert goals.remove_goal_by_id(connection, gone.goal_id) == gone
        with pytest.raises(GoalOptionError, match=f"no goal with id {gone.goal_id}"):
            goals.remove_goal_by_id(connection, gone.goal_id)
        assert goals.list_goals(connection) == [kept]


def test_the_database_without_the_schema(fresh_database: str, invoke: Any) -> None:
    result = invoke(fresh_database, "goal", "list")
    assert result.exit_code == 1
    assert result.output.startswith(
        "picolytics: error: the database has no picolytics tables yet (run `picolytics migrate`"
    )


def test_the_database_before_the_goals_migration(
    fresh_database: str, invoke: Any, tmp_path: Path
) -> None:
    older = tmp_path / "sql"
    older.mkdir()
    for path in sql_dir().glob("*.sql"):
        if int(path.name[:4]) < 10:
            shutil.copy(path, older / path.name)
    migrate.apply(fresh_database, older)
    add_sites(fresh_database, SITE)
    result = invoke(fresh_database, "goal", "add", SITE, "--event", "Signup")
    assert (result.exit_code, result.output) == (
        1,
        "picolytics: error: the database has no goals table yet: run `picolytics migrate` first\n",
    )


def test_the_reader_may_read_the_goals_only(admin_conninfo: str, sites: str) -> None:
    with psycopg.connect(sites) as connection:
        goals.add_goal(connection, SITE, goals.definition(None, "/pricing"))
    for reader in reader_login(admin_conninfo, sites):
        assert query(reader, "SELECT display_name FROM goals") == [("Visit /pricing",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(reader, "DELETE FROM goals")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(
                reader,
                "INSERT INTO goals (site_id, kind, event_name, display_name)"
                " VALUES (1, 'event', 'x', 'x')",
            )


@pytest.mark.slow
def test_the_commands_as_processes(sites: str, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": sites}
    added = run_cli("goal", "add", SITE, "--page", "/docs/*", env=env, cwd=tmp_path)
    assert (added.returncode, added.stdout) == (
        0,
        "added example.com: goal 'Visit /docs/*' (page '/docs/*')\n",
    )
    listed = run_cli("goal", "list", "--json", env=env, cwd=tmp_path)
    assert [goal["display_name"] for goal in json.loads(listed.stdout)] == ["Visit /docs/*"]
    twice = run_cli("goal", "add", SITE, "--page", "/docs/*", env=env, cwd=tmp_path)
    assert twice.returncode == 2
    assert twice.stderr.strip().splitlines()[-1] == (
        "picolytics: error: example.com has a goal for the page '/docs/*' already"
        " (named 'Visit /docs/*')"
    )
    assert "Traceback" not in twice.stderr
    removed = run_cli("goal", "remove", SITE, "Visit /docs/*", env=env, cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert stored(sites) == []


# --- the wildcard, by PostgreSQL ----------------------------------------------------------


def matches(conninfo: str, cases: list[tuple[str, str]]) -> list[bool]:
    """path ~ page_regex(pattern) for each (pattern, path), in PostgreSQL, in one query."""
    rows = query(
        conninfo,
        "SELECT path ~ regex FROM unnest(%s::text[], %s::text[])"
        " WITH ORDINALITY AS c(path, regex, n) ORDER BY n",
        ([path for _, path in cases], [page_regex(pattern) for pattern, _ in cases]),
    )
    return [bool(row[0]) for row in rows]


# (pattern, path, matches): Plausible's examples (plausible/docs, docs/pageview-goals.md,
# as of 2024 and later), then the edges of anchoring, runs of stars and escaping.
WILDCARD_CASES = [
    ("/pricing", "/pricing", True),
    ("/pricing", "/pricing/team", False),
    ("/pricing", "/Pricing", False),
    ("/pricing", "/pricings", False),
    ("/blog/*", "/blog/", True),
    ("/blog/*", "/blog/hello", True),
    ("/blog/*", "/blog/2025/hello", True),
    ("/blog/*", "/blog", False),
    ("/blog4", "/blog4", True),
    ("/blog4", "/blog45", False),
    ("/blog4", "/blog4/new", False),
    ("/blog4", "/blog", False),
    ("/blog*", "/blog", True),
    ("/blog*", "/blog/2024/hello", True),
    ("/blog*", "/blogs", True),
    ("/blog*", "/about/blog", False),
    ("/rule/*", "/rule/1", True),
    ("/rule/*", "/rule/general-rule-14", True),
    ("/rule/*", "/rule/4/details", True),
    ("/rule/*", "/rule/", True),
    ("/rule/*", "/rules", False),
    ("/how-to-*", "/how-to-play", True),
    ("/how-to-*", "/how-to-/blog", True),
    ("/*/admin", "/sites/admin", True),
    ("/*/admin", "/sites/2/admin", True),
    ("/*/admin", "/sites/admin/page-2", False),
    ("/*/admin", "/admin", False),
    ("*keyword*", "/a/keyword/b", True),
    ("*keyword*", "/keywor/d", False),
    ("/wp/*", "/wp/assets/subdirectory/another/image.png", True),
    ("/wp/*", "/page/wp", False),
    # ** is the same as *, as in Plausible; a run of stars is one wildcard.
    ("/wp/**", "/wp/assets/image.png", True),
    ("/wp/**", "/page/wp", False),
    ("/a***b", "/a/x/y/b", True),
    ("/a***b", "/ab", True),
    ("/a***b", "/a/b/c", False),
    ("*", "/", True),
    ("*", "", True),
    ("**", "/anything/at/all#/route", True),
    ("/", "/", True),
    ("/", "/x", False),
    # Stored hash routes are part of the path.
    ("/app#/*", "/app#/settings/profile", True),
    ("/app#/*", "/app", False),
    # Every other character is itself: regex syntax in a pattern means nothing.
    ("/a.b", "/a.b", True),
    ("/a.b", "/axb", False),
    ("/c+d", "/c+d", True),
    ("/c+d", "/ccd", False),
    ("/(x)", "/(x)", True),
    ("/(x)", "/x", False),
    ("/x?", "/x?", True),
    ("/x?", "/", False),
    ("/[ab]", "/[ab]", True),
    ("/[ab]", "/a", False),
    ("/a{2}", "/a{2}", True),
    ("/a{2}", "/aa", False),
    ("/a|b", "/a|b", True),
    ("/a|b", "/a", False),
    ("/a|b", "b", False),
    ("/^x$", "/^x$", True),
    ("/^x$", "/x", False),
    ("/a\\d", "/a\\d", True),
    ("/a\\d", "/a1", False),
    ("/a\\", "/a\\", True),
    ("/a\\*", "/a\\xyz", True),  # a backslash does not escape the wildcard
    ("/a\\*", "/a*", False),
    ("/%_", "/%_", True),
    ("/%_", "/xy", False),
    ("/*.pdf", "/docs/guide.pdf", True),
    ("/*.pdf", "/docs/guidexpdf", False),
    ("/über/*", "/über/straße", True),
    ("/über/*", "/uber/strasse", False),
    ("/a b", "/a b", True),
    ("/a b", "/ab", False),
    ("/A", "/a", False),  # case-sensitive, as Plausible
]


def test_wildcards_against_postgresql(module_database: str) -> None:
    cases = [(pattern, path) for pattern, path, _ in WILDCARD_CASES]
    got = matches(module_database, cases)
    wrong = [
        (pattern, path, expected)
        for (pattern, path, expected), answer in zip(WILDCARD_CASES, got, strict=True)
        if answer != expected
    ]
    assert wrong == []


def test_every_ascii_character_stands_for_itself(module_database: str) -> None:
    """Each printable ASCII character but `*`, alone, doubled and before a wildcard,
    matches only itself; PostgreSQL compiles every translation."""
    cases: list[tuple[str, str, bool]] = []
    for char in (c for c in string.printable if c.isprintable() and c != "*"):
        other = "Y" if char == "Z" else "Z"
        cases += [
            (f"/{char}", f"/{char}", True),
            (f"/{char}", f"/{other}", False),
            (f"/a{char}{char}b", f"/a{char}{char}b", True),
            (f"/a{char}{char}b", f"/a{other}{other}b", False),
            (f"/a{char}*", f"/a{char}xyz", True),
            (f"/a{char}*", f"/a{other}xyz", False),
        ]
    got = matches(module_database, [(pattern, path) for pattern, path, _ in cases])
    assert [case for case, answer in zip(cases, got, strict=True) if answer != case[2]] == []


def test_runs_of_stars_are_one_wildcard() -> None:
    """`.*.*...` costs PostgreSQL's matcher dearly; a run becomes one `.*`."""
    assert page_regex("/a**b***") == "^/a.*b.*$"
    assert page_regex("*" * 2000) == "^.*$"
    assert page_regex("/x.y") == "^/x\\.y$"


@functools.cache
def glob(pattern: str, path: str) -> bool:
    """A plain glob matcher, independent of regular expressions: `*` is any run of
    characters, everything else is itself, the whole path must match."""
    if not pattern:
        return not path
    if pattern[0] == "*":
        return glob(pattern[1:], path) or (bool(path) and glob(pattern, path[1:]))
    return bool(path) and path[0] == pattern[0] and glob(pattern[1:], path[1:])


ALPHABET = "/ab*.+?()[]{}|^$\\-_#%: é"
WILDCARD_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@WILDCARD_SETTINGS
@given(data=st.data())
def test_wildcards_match_like_a_glob(module_database: str, data: st.DataObject) -> None:
    text = st.text(ALPHABET, max_size=8)
    cases: list[tuple[str, str]] = []
    for _ in range(40):
        pattern = data.draw(st.text(ALPHABET, max_size=10))
        # A path the pattern matches (each * filled in), and one that may not.
        pieces = pattern.split("*")
        fills = [data.draw(text) for _ in pieces[1:]]
        filled = pieces[0] + "".join(f + p for f, p in zip(fills, pieces[1:], strict=True))
        cases += [(pattern, filled), (pattern, data.draw(text))]
    got = matches(module_database, cases)
    assert [(p, s) for (p, s), a in zip(cases, got, strict=True) if a != glob(p, s)] == []


# --- which events complete a goal ---------------------------------------------------------


def test_goal_conditions_on_stored_events(sites: str) -> None:
    """An event goal counts custom events of its name; a page goal counts pageviews of
    its path or pattern, never a custom event sent from that page."""
    at = datetime(2025, 3, 10, 12, tzinfo=UTC)
    minute = timedelta(minutes=1)
    run(
        write(
            sites,
            [
                event(at, 1, path="/pricing"),
                event(at + minute, 1, name="Signup", path="/pricing"),
                event(at + 2 * minute, 2, name="nav", path="/blog/2025/hello"),
                event(at + 3 * minute, 2, name="visible", path="/blog/2025/hello"),
                event(at + 4 * minute, 3, path="/blog"),
                event(at + 5 * minute, 3, name="signup", path="/blog"),
                event(at + 6 * minute, 3, name="hashchange", path="/blog"),  # no route
                event(at + 7 * minute, 4, path="/pricing", site=OTHER),
                event(at + 8 * minute, 5, path="/pricing/team"),
            ],
        )
    )
    with psycopg.connect(sites) as connection:
        for event_name, page in [("Signup", None), (None, "/pricing"), (None, "/blog/*")]:
            goals.add_goal(connection, SITE, goals.definition(event_name, page))
        goals.add_goal(connection, SITE, goals.definition(None, "/blog*"))
        (site_id,) = connection.execute(
            "SELECT site_id FROM sites WHERE domain = %s", (SITE,)
        ).fetchone() or (0,)

    async def counts() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        async with await AsyncConnection.connect(sites) as connection:
            for goal in await load_goals(connection, [site_id]):
                params = Params()
                condition = goal_condition(goal, params)
                cursor = await connection.execute(
                    "SELECT e.name || ' ' || e.path FROM events e"
                    f" WHERE e.site_id = {params.add(site_id)} AND {condition}"
                    " ORDER BY e.received_at",
                    params.values,
                )
                found[goal.display_name] = [row[0] for row in await cursor.fetchall()]
        return found

    assert run(counts()) == {
        "Signup": ["Signup /pricing"],
        "Visit /pricing": ["load /pricing"],
        "Visit /blog/*": ["nav /blog/2025/hello"],
        "Visit /blog*": ["nav /blog/2025/hello", "load /blog"],
    }


def test_load_goals_of_some_sites(sites: str) -> None:
    with psycopg.connect(sites) as connection:
        first = goals.add_goal(connection, OTHER, goals.definition("Buy", None))
        second = goals.add_goal(connection, SITE, goals.definition(None, "/a"))
        third = goals.add_goal(connection, OTHER, goals.definition(None, "/b"))
        ids: dict[str, int] = dict(
            connection.execute("SELECT domain, site_id FROM sites").fetchall()
        )

    async def load(site_ids: list[int]) -> list[goals.Goal]:
        async with await AsyncConnection.connect(sites) as connection:
            return await load_goals(connection, site_ids)

    assert run(load([ids[OTHER]])) == [first, third]
    assert run(load([ids[OTHER], ids[SITE]])) == [second, first, third]
    assert run(load([])) == []
