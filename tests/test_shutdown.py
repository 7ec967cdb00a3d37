"""SIGTERM under load: every 202 answered is a row afterwards, and the exit code is 0
(docs/guarantees.md, R5). The server runs as a real process under Hypercorn."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.database import query
from helpers.events import CHROME_LINUX_UA
from helpers.processes import load_then_sigterm, server_process

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("server_kind", ["hypercorn", "uvicorn"])
def test_sigterm_under_load_loses_nothing_accepted(
    migrated_database: str, tmp_path: Path, server_kind: str
) -> None:
    settings = {
        "REQUEST_RATE_LIMIT": "0",
        "BATCH_MAX_MSEC": "200",
        "SERVER": server_kind,
        "DEBUG": "true",
    }
    with server_process(migrated_database, tmp_path, settings) as server:
        accepted, unknown, before_signal = load_then_sigterm(server)
    assert before_signal > 50  # the test really ran under load
    # Every 202 is a row; a request cut off mid-answer may be a row too (never twice).
    ((rows,),) = query(migrated_database, "SELECT count(*) FROM events")
    assert accepted <= rows <= accepted + unknown
    assert query(migrated_database, "SELECT count(DISTINCT path) FROM events") == [(rows,)]
    log = server.log()
    assert "not written" not in log
    assert "127.0.0.1:" not in log.replace(server.base.removeprefix("http://"), "")  # no peers
    assert CHROME_LINUX_UA not in log
