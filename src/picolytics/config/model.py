"""The `Config` type: every setting's value in one frozen object, with its defaults.

Each field is filled by the `Setting` of the same name (settings.py); a choice setting's
field has the `Literal` type of its closed set (choices.py). The few values derived
from several settings (the database URL, the event names, the trusted networks) are
computed here so that every caller derives them the same way.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote

from picolytics.config.choices import IpExtractor, LogFormat, ServerName, SslMode
from picolytics.config.settings import DEFAULT_EVENT_NAMES, DEFAULT_TRUSTED_PROXIES
from picolytics.events import EventNames


@dataclass(frozen=True)
class Config:
    pg_conn_string: str = ""
    pg_read_conn_string: str = ""
    pg_host: str = ""
    pg_port: int = 5432
    pg_database: str = ""
    pg_user: str = ""
    pg_password: str = ""
    pg_ssl_mode: SslMode = "prefer"
    pg_conn_attempts: int = 5
    skip_migrations: bool = False
    data_dir: str = "picolytics-data"
    listen_addr: str = ":8080"
    log_format: LogFormat = "json"
    root_redirect: str = ""
    static_dir: str = "static"
    static_cache_max_age: int = 3600
    request_rate_limit: float = 10.0
    max_connections: int = 1000
    request_head_timeout_sec: float = 10.0
    request_body_timeout_sec: float = 10.0
    rate_limit_ipv6_prefix: int = 64
    autotls_enabled: bool = False
    autotls_host: str = ""
    autotls_staging: bool = True
    autotls_directory_url: str = ""
    autotls_email: str = ""
    autotls_https_addr: str = ":443"
    autotls_http_addr: str = ":80"
    autotls_ca_file: str = ""
    body_max_size: int = 2048
    valid_event_names: tuple[str, ...] = DEFAULT_EVENT_NAMES
    custom_event_names: str = ""
    allowed_sites: tuple[str, ...] = ()
    max_new_sites_per_hour: int = 100
    ip_extractor: IpExtractor = "direct"
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    geo_ip_file: str = "geoip.mmdb"
    prune_days: int = 0
    prune_check_hours: int = 24
    prune_rollup_days: int = 0
    rollup_interval_sec: int = 60
    query_timeout_sec: float = 10.0
    api_rate_limit: int = 600
    api_pool_size: int = 4
    session_timeout_min: int = 30
    dashboard_enabled: bool = True
    dashboard_session_days: int = 14
    admin_listen: str = ""
    disable_host_metrics: bool = True
    debug: bool = False
    server: ServerName = "hypercorn"
    workers: int = 1
    queue_size: int = 640_000
    queue_memory_mb: int = 256
    batch_max_size: int = 6400
    batch_max_msec: int = 500

    @property
    def uses_embedded_database(self) -> bool:
        return not (self.pg_conn_string or self.pg_host)

    def database_url(self) -> str:
        """The external database's connection string, every part URL-escaped."""
        if self.pg_conn_string:
            return self.pg_conn_string
        host = self.pg_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        elif host.startswith("/"):
            host = quote(host, safe="")  # a unix socket folder
        credentials = quote(self.pg_user, safe="")
        if self.pg_password:
            credentials += ":" + quote(self.pg_password, safe="")
        at = "@" if credentials else ""
        database = quote(self.pg_database, safe="")
        return (
            f"postgresql://{credentials}{at}{host}:{self.pg_port}/{database}"
            f"?sslmode={self.pg_ssl_mode}"
        )

    def event_names(self) -> EventNames:
        custom = re.compile(self.custom_event_names) if self.custom_event_names else None
        return EventNames(frozenset(self.valid_event_names), custom)

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.trusted_proxies)


# The defaults as one object: the default config file is written from it.
DEFAULTS = Config()
