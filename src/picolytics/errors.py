"""Small, explicit error classes; the CLI turns each into one clean line and an exit code."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its class name when the message is empty:
    enough for one log line, and never an IndexError of its own."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class PicolyticsError(Exception):
    """Base of every error that the CLI reports as a message instead of a traceback."""

    exit_code = 1


class ConfigError(PicolyticsError):
    """A setting is missing, malformed or out of range; the message names it."""

    exit_code = 2


class DatabaseUnavailableError(PicolyticsError):
    """PostgreSQL could not be reached within the configured attempts."""


class MigrationError(PicolyticsError):
    """A migration file is malformed or failed to apply."""


class EmbeddedDatabaseError(PicolyticsError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class ListenError(PicolyticsError):
    """The server could not bind its listening address."""


class PruneError(PicolyticsError):
    """Pruning old data failed (the database refused or went away)."""


class PruneBusyError(PicolyticsError):
    """Another process is pruning right now; this one did nothing."""


class ServerError(PicolyticsError):
    """The server did not run or stop as it should."""


class ReportError(PicolyticsError):
    """`picolytics report` could not read its numbers (database refused, schema too old)."""


class ReportOptionError(PicolyticsError):
    """A `picolytics report` option is invalid (bad date, unknown site); names the flag."""

    exit_code = 2


class NoReportDataError(PicolyticsError):
    """Nothing to report: the database has no picolytics tables or no site yet."""

    exit_code = 3


class SiteError(PicolyticsError):
    """`picolytics site` could not read or change the sites (database refused, schema
    too old)."""


class SiteOptionError(PicolyticsError):
    """A `picolytics site` argument is invalid (unknown site or time zone); names it."""

    exit_code = 2


class QueryError(PicolyticsError):
    """A statistics query is invalid; `field` names the part that is wrong."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class QueryTimeoutError(PicolyticsError):
    """A statistics query ran past QUERY_TIMEOUT_SEC and was cancelled in PostgreSQL."""


class RollupError(PicolyticsError):
    """The read model could not be brought up to date (database refused or went away)."""


class RollupOptionError(PicolyticsError):
    """A `picolytics rollup` option is invalid (unknown site, bad day, --from after
    --to); names the flag."""

    exit_code = 2


class ApiKeyError(PicolyticsError):
    """`picolytics api-key` could not read or change the keys (database refused, schema
    too old)."""


class ApiKeyOptionError(PicolyticsError):
    """A `picolytics api-key` argument is invalid (bad or taken name, unknown key, bad
    site); names it."""

    exit_code = 2


class ApiAuthError(PicolyticsError):
    """A Stats API request is refused before it is answered: no key or an invalid one
    (status 401), or its key is over its rate limit (429, `retry_after` seconds)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class GoalError(PicolyticsError):
    """`picolytics goal` could not read or change the goals (database refused, schema
    too old)."""


class GoalOptionError(PicolyticsError):
    """A `picolytics goal` argument is invalid (unknown site or goal, a goal that exists
    already, an empty or malformed event name or page path); names it."""

    exit_code = 2


class ApiRequestError(PicolyticsError):
    """A Stats API query is invalid (HTTP 400). `field` is a JSON pointer to the part
    that is wrong (`#/filters/0/1`), and the message starts with it, as Plausible's do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ApiParamError(PicolyticsError):
    """A Stats API v1 request is invalid (HTTP 400): a query-string parameter is missing,
    malformed, or does not go with the others. The message is Plausible's own wording
    where Plausible has one, and never echoes more than a short piece of the input."""


class AccountError(PicolyticsError):
    """`picolytics user` or `share`, or the dashboard's login, could not read or change
    the accounts, sessions or shared links (database refused, schema too old)."""


class AccountOptionError(PicolyticsError):
    """A `picolytics user` or `share` argument is invalid (a malformed e-mail address,
    a password too short, an unknown account, site or link, an account that exists
    already); names it."""

    exit_code = 2


class ApiBusyError(PicolyticsError):
    """Every connection of the Stats API's pool stayed in use for as long as a request
    may wait for one (HTTP 503: try again later)."""


class UnsafeSchemaError(PicolyticsError):
    """A function or operator in a schema on picolytics' search_path, owned by a role
    that is neither picolytics' nor a superuser, would shadow a built-in one."""


class BackupError(PicolyticsError):
    """`picolytics backup` could not find or run pg_dump, or pg_dump failed."""


class ImportFileError(PicolyticsError):
    """A file to import (docs/imports.md) is malformed or not of the format: names the
    file, and where known the line and the column, as `FILE line N, column NAME: reason`.
    Nothing is stored."""

    exit_code = 2

    def __init__(self, file: str, line: int | None, column: str | None, reason: str) -> None:
        where = file + (f" line {line}" if line is not None else "")
        where += f", column {column}" if column is not None else ""
        super().__init__(f"{where}: {reason}")
        self.file, self.line, self.column, self.reason = file, line, column, reason


class ImportOptionError(PicolyticsError):
    """A `picolytics import` or `export` argument is invalid (no such file, unknown
    site or import, a bad day, --from after --to); names it."""

    exit_code = 2


class ImportStoreError(PicolyticsError):
    """`picolytics import` or `export` could not read or change the database (refused,
    gone away, schema too old); nothing was changed."""


class ReadDatabaseError(PicolyticsError):
    """The read connection (PGREADCONNSTRING) reaches a database without picolytics'
    schema; the message names the setting."""


class CitusPlanError(PicolyticsError):
    """On a Citus database, a table could not be made the reference or distributed table
    picolytics' plan wants (storage/citus.py); the message names the table."""
