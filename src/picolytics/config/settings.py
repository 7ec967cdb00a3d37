"""Every setting picolytics understands, declared as data.

One `Setting` per configuration value: the field of `Config` it fills, the environment
variable and YAML key users already know from the original picolytics, its kind and
bounds, and the one-line help that `--write-default-config` writes next to it.
This module is only data: `load` and `validate` turn it into a frozen `Config`, and
`template` writes it out as the commented default config file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from picolytics.config.choices import IP_EXTRACTORS, LOG_FORMATS, SERVER_NAMES, SSL_MODES

Kind = Literal["str", "int", "float", "bool", "list", "choice"]

DEFAULT_EVENT_NAMES = (
    "load",
    "visible",
    "hidden",
    "nav",
    "hashchange",
    "ping",
    "engagement",
    "outbound",
    "download",
)

# Loopback, link-local, private-use (RFC 1918) and unique-local ranges, v4 and v6.
DEFAULT_TRUSTED_PROXIES = (
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


@dataclass(frozen=True)
class Setting:
    field: str
    env: str
    key: str
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # for kind "choice": get_args of a Literal in choices.py
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    # Database
    Setting(
        "pg_conn_string",
        "PGCONNSTRING",
        "pgConnString",
        "str",
        "PostgreSQL URL, e.g. postgresql://user:pass@host:5432/db (URL-escape each part). "
        "Leave this and pgHost empty to use the embedded PostgreSQL in dataDir.",
        secret=True,
    ),
    Setting(
        "pg_read_conn_string",
        "PGREADCONNSTRING",
        "pgReadConnString",
        "str",
        "PostgreSQL URL or conninfo that the report, the Stats API and the dashboard's "
        "numbers read from, e.g. a streaming replica (empty: they read from the primary)",
        secret=True,
    ),
    Setting("pg_host", "PGHOST", "pgHost", "str", "PostgreSQL host (or a unix socket folder)"),
    Setting("pg_port", "PGPORT", "pgPort", "int", "PostgreSQL port", 1, 65535),
    Setting("pg_database", "PGDATABASE", "pgDatabase", "str", "PostgreSQL database name"),
    Setting("pg_user", "PGUSER", "pgUser", "str", "PostgreSQL user"),
    Setting("pg_password", "PGPASSWORD", "pgPassword", "str", "PostgreSQL password", secret=True),
    Setting(
        "pg_ssl_mode",
        "PGSSLMODE",
        "pgSslMode",
        "choice",
        "PostgreSQL SSL mode",
        choices=SSL_MODES,
    ),
    Setting(
        "pg_conn_attempts",
        "PGCONNATTEMPTS",
        "pgConnAttempts",
        "int",
        "Connection attempts at startup (with backoff) before giving up",
        1,
        1000,
    ),
    Setting(
        "skip_migrations",
        "SKIP_MIGRATIONS",
        "skipMigrations",
        "bool",
        "Do not apply database migrations when the server starts",
    ),
    Setting(
        "data_dir",
        "DATA_DIR",
        "dataDir",
        "str",
        "Folder of the embedded PostgreSQL, used when no database is configured",
    ),
    # HTTP server
    Setting(
        "listen_addr",
        "LISTEN_ADDR",
        "listenAddr",
        "str",
        "Address of the public server, host:port (an empty host means every IPv4 address)",
    ),
    Setting(
        "log_format",
        "LOG_FORMAT",
        "logFormat",
        "choice",
        "Log line format",
        choices=LOG_FORMATS,
    ),
    Setting(
        "root_redirect",
        "ROOT_REDIRECT",
        "rootRedirect",
        "str",
        "Absolute http(s) URL that / redirects to (empty: / answers OK)",
    ),
    Setting(
        "static_dir",
        "STATIC_DIR",
        "staticDir",
        "str",
        "Folder whose files replace the built-in ones (pico.js...) when it exists",
    ),
    Setting(
        "static_cache_max_age",
        "STATIC_CACHE_MAX_AGE",
        "staticCacheMaxAge",
        "int",
        "Cache-Control max-age of static files, in seconds",
        0,
        31_536_000,
    ),
    Setting(
        "request_rate_limit",
        "REQUEST_RATE_LIMIT",
        "requestRateLimit",
        "float",
        "Events per second per client IP and process (0 = no limit)",
        0,
        1_000_000,
    ),
    Setting(
        "max_connections",
        "MAX_CONNECTIONS",
        "maxConnections",
        "int",
        "Most open connections per server process; a further one is answered 503 and closed",
        1,
        1_000_000,
    ),
    Setting(
        "request_head_timeout_sec",
        "REQUEST_HEAD_TIMEOUT_SEC",
        "requestHeadTimeoutSec",
        "float",
        "Seconds a client has to send a whole request head, from connecting or from the "
        "previous response (an idle keep-alive connection is closed then); else closed",
        0.5,
        3600,
    ),
    Setting(
        "request_body_timeout_sec",
        "REQUEST_BODY_TIMEOUT_SEC",
        "requestBodyTimeoutSec",
        "float",
        "Seconds a client has to send a whole request body once its head is in; else 408",
        0.5,
        3600,
    ),
    Setting(
        "rate_limit_ipv6_prefix",
        "RATE_LIMIT_IPV6_PREFIX",
        "rateLimitIpv6Prefix",
        "int",
        "Prefix length of the IPv6 networks whose addresses share one rate-limit bucket"
        " (64: one subscriber's LAN; 56 or 48: whole allocations). IPv4: per address",
        48,
        64,
    ),
    # Automatic TLS
    Setting(
        "autotls_enabled",
        "AUTOTLS_ENABLED",
        "autotlsEnabled",
        "bool",
        "Get a certificate from Let's Encrypt and serve HTTPS on :443",
    ),
    Setting(
        "autotls_host",
        "AUTOTLS_HOST",
        "autotlsHost",
        "str",
        "Public DNS name of this server (required with autotlsEnabled)",
    ),
    Setting(
        "autotls_staging",
        "AUTOTLS_STAGING",
        "autotlsStaging",
        "bool",
        "Use the Let's Encrypt staging environment",
    ),
    Setting(
        "autotls_directory_url",
        "AUTOTLS_DIRECTORY_URL",
        "autotlsDirectoryUrl",
        "str",
        "ACME directory URL of another CA (empty: Let's Encrypt, per autotlsStaging)",
    ),
    Setting(
        "autotls_email",
        "AUTOTLS_EMAIL",
        "autotlsEmail",
        "str",
        "Contact e-mail of the ACME account (optional)",
    ),
    Setting(
        "autotls_https_addr",
        "AUTOTLS_HTTPS_ADDR",
        "autotlsHttpsAddr",
        "str",
        "Address of the HTTPS server with autotlsEnabled (replaces listenAddr)",
    ),
    Setting(
        "autotls_http_addr",
        "AUTOTLS_HTTP_ADDR",
        "autotlsHttpAddr",
        "str",
        "Address answering ACME HTTP-01 challenges and redirecting to HTTPS",
    ),
    Setting(
        "autotls_ca_file",
        "AUTOTLS_CA_FILE",
        "autotlsCaFile",
        "str",
        "CA bundle (PEM) to verify the ACME server with; empty: the system's",
    ),
    # Event handler
    Setting(
        "body_max_size",
        "BODY_MAX_SIZE",
        "bodyMaxSize",
        "int",
        "Largest accepted request body, in bytes",
        64,
        1_048_576,
    ),
    Setting(
        "valid_event_names",
        "VALID_EVENT_NAMES",
        "validEventNames",
        "list",
        "Event names the server accepts (comma-separated in the environment)",
    ),
    Setting(
        "custom_event_names",
        "CUSTOM_EVENT_NAMES",
        "customEventNames",
        "str",
        "Regular expression a whole custom event name must match, besides validEventNames"
        " (e.g. '[A-Za-z0-9 _:-]+'). Empty: only validEventNames",
    ),
    Setting(
        "allowed_sites",
        "ALLOWED_SITES",
        "allowedSites",
        "list",
        "Domains to track (without www.); events for other sites are refused. Empty: any",
    ),
    Setting(
        "max_new_sites_per_hour",
        "MAX_NEW_SITES_PER_HOUR",
        "maxNewSitesPerHour",
        "int",
        "With allowedSites empty: at most this many sites new to a process are accepted"
        " per hour, events for further ones are refused (0 = no new sites)",
        0,
        1_000_000,
    ),
    # Proxies
    Setting(
        "ip_extractor",
        "IP_EXTRACTOR",
        "ipExtractor",
        "choice",
        "How to find the client IP: the direct peer, X-Forwarded-For or X-Real-IP",
        choices=IP_EXTRACTORS,
    ),
    Setting(
        "trusted_proxies",
        "TRUSTED_PROXIES",
        "trustedProxies",
        "list",
        "CIDR ranges whose forwarded headers are believed (comma-separated in the environment)",
    ),
    # Privacy
    Setting(
        "geo_ip_file",
        "GEO_IP_FILE",
        "geoIpFile",
        "str",
        "MaxMind-format city database (e.g. DB-IP city lite); missing means no geography",
    ),
    Setting(
        "prune_days",
        "PRUNE_DAYS",
        "pruneDays",
        "int",
        "Days of events and sessions to keep (0 = keep forever)",
        0,
        100_000,
    ),
    Setting(
        "prune_check_hours",
        "PRUNE_CHECK_HOURS",
        "pruneCheckHours",
        "int",
        "Hours between two checks for data to prune",
        1,
        8760,
    ),
    Setting(
        "prune_rollup_days",
        "PRUNE_ROLLUP_DAYS",
        "pruneRollupDays",
        "int",
        "Days of rolled-up statistics to keep (0 = keep forever; else above pruneDays)",
        0,
        100_000,
    ),
    Setting(
        "rollup_interval_sec",
        "ROLLUP_INTERVAL_SEC",
        "rollupIntervalSec",
        "int",
        "Seconds between two roll-ups of closed days by the server (0 = never: cron "
        "`picolytics rollup`)",
        0,
        86_400,
    ),
    Setting(
        "query_timeout_sec",
        "QUERY_TIMEOUT_SEC",
        "queryTimeoutSec",
        "float",
        "Seconds a statistics query may run before PostgreSQL cancels it (report, API)",
        0.1,
        3600,
    ),
    Setting(
        "api_rate_limit",
        "API_RATE_LIMIT",
        "apiRateLimit",
        "int",
        "Stats API requests per minute per API key and process (0 = no limit)",
        0,
        1_000_000,
    ),
    Setting(
        "api_pool_size",
        "API_POOL_SIZE",
        "apiPoolSize",
        "int",
        "Most PostgreSQL connections the Stats API and dashboard keep open per process "
        "(opened when needed; a request past them waits up to queryTimeoutSec)",
        1,
        100,
    ),
    Setting(
        "session_timeout_min",
        "SESSION_TIMEOUT_MIN",
        "sessionTimeoutMin",
        "int",
        "Idle minutes after which a visitor's next event starts a new visit",
        1,
        1440,
    ),
    # Dashboard
    Setting(
        "dashboard_enabled",
        "DASHBOARD_ENABLED",
        "dashboardEnabled",
        "bool",
        "Serve the dashboard at /dashboard/ and its shared links at /share/",
    ),
    Setting(
        "dashboard_session_days",
        "DASHBOARD_SESSION_DAYS",
        "dashboardSessionDays",
        "int",
        "Days a dashboard login lasts before the server asks for the password again",
        1,
        365,
    ),
    # Admin server
    Setting(
        "admin_listen",
        "ADMIN_LISTEN",
        "adminListen",
        "str",
        "Address of the admin server (/healthz, /ready, /metrics); empty = off",
    ),
    Setting(
        "disable_host_metrics",
        "DISABLE_HOST_METRICS",
        "disableHostMetrics",
        "bool",
        "Leave out host CPU, load and memory metrics",
    ),
    Setting(
        "debug", "DEBUG", "debug", "bool", "Debug logging and debug endpoints on the admin server"
    ),
    # Performance tuning
    Setting(
        "server",
        "SERVER",
        "server",
        "choice",
        "HTTP server of the public port: hypercorn, or uvicorn (faster; pip extra [uvicorn])",
        choices=SERVER_NAMES,
    ),
    Setting(
        "workers",
        "WORKERS",
        "workers",
        "int",
        "Server processes sharing the public port (each with its own queue and writer)",
        1,
        64,
    ),
    Setting(
        "queue_size",
        "QUEUE_SIZE",
        "queueSize",
        "int",
        "Most events held in memory waiting to be written, per worker",
        1,
        100_000_000,
    ),
    Setting(
        "queue_memory_mb",
        "QUEUE_MEMORY_MB",
        "queueMemoryMb",
        "int",
        "Most memory, in MiB, that events waiting to be written may hold, per worker "
        "(beyond it, or queueSize, new events are refused with 503)",
        1,
        1_000_000,
    ),
    Setting(
        "batch_max_size",
        "BATCH_MAX_SIZE",
        "batchMaxSize",
        "int",
        "Most events written in one batch",
        1,
        1_000_000,
    ),
    Setting(
        "batch_max_msec",
        "BATCH_MAX_MSEC",
        "batchMaxMsec",
        "int",
        "Longest wait, in ms, before a partial batch is written",
        1,
        600_000,
    ),
)

# Lookups by YAML key (reading a file) and by Config field (naming a bad value).
BY_KEY = {setting.key: setting for setting in SETTINGS}
BY_FIELD = {setting.field: setting for setting in SETTINGS}
