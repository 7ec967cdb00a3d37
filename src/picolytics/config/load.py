"""The one frozen configuration object: defaults < YAML file < environment.

Everything is validated here, up front, so a bad value stops the program at startup
with a message naming the setting instead of failing later in the middle of traffic.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

from picolytics.config.listen import split_listen_addr
from picolytics.config.settings import (
    BY_KEY,
    DEFAULT_EVENT_NAMES,
    DEFAULT_TRUSTED_PROXIES,
    SETTINGS,
    Setting,
)
from picolytics.errors import ConfigError
from picolytics.events import EventNames

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Config:
    pg_conn_string: str = ""
    pg_host: str = ""
    pg_port: int = 5432
    pg_database: str = ""
    pg_user: str = ""
    pg_password: str = ""
    pg_ssl_mode: str = "prefer"
    pg_conn_attempts: int = 5
    skip_migrations: bool = False
    data_dir: str = "picolytics-data"
    listen_addr: str = ":8080"
    log_format: str = "json"
    root_redirect: str = ""
    static_dir: str = "static"
    static_cache_max_age: int = 3600
    request_rate_limit: float = 10.0
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
    ip_extractor: str = "direct"
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    geo_ip_file: str = "geoip.mmdb"
    prune_days: int = 0
    prune_check_hours: int = 24
    session_timeout_min: int = 30
    admin_listen: str = ""
    disable_host_metrics: bool = True
    debug: bool = False
    server: str = "hypercorn"
    workers: int = 1
    queue_size: int = 640_000
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


DEFAULTS = Config()


def _bad(setting: Setting, raw: object, why: str) -> ConfigError:
    shown = "<hidden>" if setting.secret else repr(raw)
    return ConfigError(f"{setting.env} ({setting.key}) = {shown}: {why}")


def _check_range(setting: Setting, raw: object, number: float) -> None:
    if setting.minimum is not None and number < setting.minimum:
        raise _bad(setting, raw, f"must be at least {setting.minimum:g}")
    if setting.maximum is not None and number > setting.maximum:
        raise _bad(setting, raw, f"must be at most {setting.maximum:g}")


def _parse_list(setting: Setting, raw: object) -> tuple[str, ...]:
    if raw is None:  # "key:" with no value in YAML
        items = []
    elif isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, list):
        items = [str(item) for item in raw]
    else:
        raise _bad(setting, raw, "expected a list or a comma-separated string")
    return tuple(item.strip() for item in items if item.strip())


def _parse_bool(setting: Setting, raw: object, text: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _bad(setting, raw, "expected true or false")


def _parse_int(setting: Setting, raw: object, text: str) -> int:
    if isinstance(raw, bool) or not text.lstrip("+-").isdigit():
        raise _bad(setting, raw, "expected a whole number")
    number = int(text)
    _check_range(setting, raw, number)
    return number


def _parse_float(setting: Setting, raw: object, text: str) -> float:
    try:
        real = float(text)
    except ValueError:
        raise _bad(setting, raw, "expected a number") from None
    if not math.isfinite(real):
        raise _bad(setting, raw, "expected a finite number")
    _check_range(setting, raw, real)
    return real


def _parse_choice(setting: Setting, raw: object, text: str) -> str:
    if text.lower() not in setting.choices:
        raise _bad(setting, raw, "expected one of " + ", ".join(setting.choices))
    return text.lower()


def _parse_str(setting: Setting, raw: object, text: str) -> str:
    return text


_SCALAR_PARSERS: dict[str, Callable[[Setting, object, str], object]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "float": _parse_float,
    "choice": _parse_choice,
    "str": _parse_str,
}


def _parse_value(setting: Setting, raw: object) -> object:
    """Turn one raw value (an env string or a YAML scalar/list) into the field's type."""
    if setting.kind == "list":
        return _parse_list(setting, raw)
    if isinstance(raw, (dict, list)):
        raise _bad(setting, raw, "expected a single value")
    text = "" if raw is None else str(raw).strip()
    return _SCALAR_PARSERS[setting.kind](setting, raw, text)


def _read_yaml(path: Path) -> dict[str, object]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    unknown = sorted(str(key) for key in document if key not in BY_KEY)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {str(key): value for key, value in document.items()}


def _site_domain(domain: str) -> str:
    """Allowed sites compare like tracked ones: lowercase, IDNA, no "www."."""
    domain = domain.strip().lower().rstrip(".").removeprefix("www.")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise _bad(BY_KEY["allowedSites"], domain, "not a domain name") from None


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """`-c FILE` must exist; otherwise CONFIG_PATH/CONFIG_NAME.yaml is used if present."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    name = environ.get("CONFIG_NAME", "config")
    folder = Path(environ.get("CONFIG_PATH", "."))
    for suffix in (".yaml", ".yml", ""):
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    if "CONFIG_NAME" in environ or "CONFIG_PATH" in environ:
        raise ConfigError(f"no config file {name}.yaml in {folder}")
    return None


def load_config(explicit_file: str | None, environ: Mapping[str, str]) -> Config:
    """Build the Config from defaults, then the config file, then the environment."""
    path = find_config_file(explicit_file, environ)
    from_file = _read_yaml(path) if path else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env in environ:
            parsed = _parse_value(setting, environ[setting.env])
        elif setting.key in from_file:
            parsed = _parse_value(setting, from_file[setting.key])
        else:
            continue
        if setting.field == "valid_event_names" and not parsed:
            continue  # as in the original: an empty list means the defaults
        if setting.field == "allowed_sites":
            assert isinstance(parsed, tuple)  # a list setting
            parsed = tuple(_site_domain(domain) for domain in parsed)
        values[setting.field] = parsed
    config = Config(**values)
    validate(config)
    return config


def _setting(field: str) -> Setting:
    return next(setting for setting in SETTINGS if setting.field == field)


def _validate_addresses(config: Config) -> None:
    if config.pg_conn_string:
        scheme = urlsplit(config.pg_conn_string).scheme
        if scheme not in ("postgres", "postgresql") and "=" not in config.pg_conn_string:
            raise _bad(
                _setting("pg_conn_string"),
                config.pg_conn_string,
                "expected a postgres:// or postgresql:// URL",
            )
    for field in ("listen_addr", "admin_listen"):
        value = getattr(config, field)
        if field == "admin_listen" and not value:
            continue
        try:
            split_listen_addr(value)
        except ValueError as error:
            raise _bad(_setting(field), value, str(error)) from None
    if config.root_redirect:
        parts = urlsplit(config.root_redirect)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _bad(
                _setting("root_redirect"),
                config.root_redirect,
                "expected an absolute http:// or https:// URL",
            )


def _validate_lists(config: Config) -> None:
    for cidr in config.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise _bad(_setting("trusted_proxies"), cidr, "not a CIDR range") from None
    for name in config.valid_event_names:
        if not (0 < len(name) <= 64 and name.replace("_", "").replace("-", "").isalnum()):
            raise _bad(
                _setting("valid_event_names"),
                name,
                "event names are 1-64 letters, digits, '-' or '_'",
            )
    if config.custom_event_names:
        try:
            re.compile(config.custom_event_names)
        except re.error as error:
            raise _bad(
                _setting("custom_event_names"),
                config.custom_event_names,
                f"not a regular expression ({error})",
            ) from None


_DNS_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}")


def _validate_autotls(config: Config) -> None:
    for field in ("autotls_https_addr", "autotls_http_addr"):
        try:
            split_listen_addr(getattr(config, field))
        except ValueError as error:
            raise _bad(_setting(field), getattr(config, field), str(error)) from None
    if config.autotls_directory_url:
        parts = urlsplit(config.autotls_directory_url)
        if parts.scheme != "https" or not parts.hostname:
            raise _bad(
                _setting("autotls_directory_url"),
                config.autotls_directory_url,
                "expected an absolute https:// URL",
            )
    if config.autotls_email and not re.fullmatch(r"[^@\s]+@[^@\s]+", config.autotls_email):
        raise _bad(_setting("autotls_email"), config.autotls_email, "not an e-mail address")
    if config.autotls_ca_file and not Path(config.autotls_ca_file).is_file():
        raise _bad(_setting("autotls_ca_file"), config.autotls_ca_file, "no such file")
    if config.autotls_enabled:
        _validate_autotls_enabled(config)


def _validate_autotls_enabled(config: Config) -> None:
    host = config.autotls_host
    if not host:
        raise _bad(_setting("autotls_host"), "", "required when autotlsEnabled is true")
    is_ip = True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        is_ip = False
    if is_ip or not _DNS_NAME.fullmatch(host):
        raise _bad(_setting("autotls_host"), host, "expected a lowercase DNS name (no port, no IP)")
    if importlib.util.find_spec("acme") is None:
        raise _bad(
            _setting("autotls_enabled"),
            True,
            "the ACME client is not installed: pip install 'picolytics[tls]'",
        )
    if config.workers > 1:
        raise _bad(_setting("workers"), config.workers, "must be 1 with autotlsEnabled")
    if config.server != "hypercorn":
        raise _bad(_setting("server"), config.server, "autotlsEnabled needs hypercorn")


def validate(config: Config) -> None:
    """Cross-field and format checks that a single value's type cannot express."""
    _validate_addresses(config)
    _validate_lists(config)
    _validate_autotls(config)
    if config.batch_max_size > config.queue_size:
        raise _bad(
            _setting("batch_max_size"),
            config.batch_max_size,
            f"cannot exceed queueSize ({config.queue_size})",
        )
    if config.server == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        raise _bad(
            _setting("server"),
            "uvicorn",
            "uvicorn is not installed: pip install 'picolytics[uvicorn]'",
        )
    if not config.data_dir:
        raise _bad(_setting("data_dir"), "", "must name a folder")


def _yaml_scalar(value: object) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return dumped.removesuffix("\n...\n").strip()


def default_config_yaml() -> str:
    """A complete, commented config file whose values are the defaults."""
    lines = [
        "# picolytics configuration. Environment variables override these values.",
        "# Generated by `picolytics --write-default-config`; every setting is listed.",
        "",
    ]
    for setting in SETTINGS:
        lines.append(f"# {setting.help} (env {setting.env})")
        if setting.choices:
            lines.append("# one of: " + ", ".join(setting.choices))
        value = getattr(DEFAULTS, setting.field)
        if value == ():
            lines.append(f"{setting.key}: []")
        elif isinstance(value, tuple):
            lines.append(f"{setting.key}:")
            lines.extend(f"  - {_yaml_scalar(item)}" for item in value)
        else:
            lines.append(f"{setting.key}: {_yaml_scalar(value)}")
        lines.append("")
    return "\n".join(lines)


def write_default_config(path: Path) -> None:
    """Write the default config to `path`, never overwriting an existing file."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(default_config_yaml())
    except FileExistsError:
        raise ConfigError(f"{path} already exists; not overwriting it") from None
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from None
