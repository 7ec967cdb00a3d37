"""Checks of a whole Config that a single value's kind and bounds cannot express.

Formats (URLs, listening addresses, CIDR ranges, event names, DNS names), settings
that only make sense together (automatic TLS, batch and queue sizes) and optional
extras that a chosen setting needs installed. Each failure names the setting.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from picolytics.config.listen import split_listen_addr
from picolytics.config.model import Config
from picolytics.config.parse import setting_error
from picolytics.config.settings import BY_FIELD

_DNS_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}")


def validate(config: Config) -> None:
    """Raise a ConfigError naming the first setting that is wrong in `config`."""
    _validate_addresses(config)
    _validate_lists(config)
    _validate_autotls(config)
    if config.batch_max_size > config.queue_size:
        raise setting_error(
            BY_FIELD["batch_max_size"],
            config.batch_max_size,
            f"cannot exceed queueSize ({config.queue_size})",
        )
    if config.server == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        raise setting_error(
            BY_FIELD["server"],
            "uvicorn",
            "uvicorn is not installed: pip install 'picolytics[uvicorn]'",
        )
    if not config.data_dir:
        raise setting_error(BY_FIELD["data_dir"], "", "must name a folder")
    _validate_retention(config)


def _validate_retention(config: Config) -> None:
    """Rollups outlive raw rows, or are kept forever (docs/read-model.md).

    Rollups are dropped by whole local days and raw rows at a UTC midnight, so a local
    day at the raw cut-off still has some raw rows; keeping rollups at least one day
    longer than raw rows means the roller never finds a day without its rollup but
    with raw rows (which it would roll up again, from a part of the day).
    """
    days, raw_days = config.prune_rollup_days, config.prune_days
    if days == 0:
        return
    setting = BY_FIELD["prune_rollup_days"]
    if raw_days == 0:
        raise setting_error(
            setting, days, "must be 0 while pruneDays is 0 (raw rows are kept forever)"
        )
    if days <= raw_days:
        raise setting_error(
            setting, days, f"must be 0 or above pruneDays ({raw_days}): rollups outlive raw rows"
        )


def _validate_listen_addr(config: Config, field: str) -> None:
    value = getattr(config, field)
    try:
        split_listen_addr(value)
    except ValueError as error:
        raise setting_error(BY_FIELD[field], value, str(error)) from None


def _validate_addresses(config: Config) -> None:
    for field in ("pg_conn_string", "pg_read_conn_string"):  # the primary, the reads
        value = getattr(config, field)
        scheme = urlsplit(value).scheme
        if value and scheme not in ("postgres", "postgresql") and "=" not in value:
            raise setting_error(
                BY_FIELD[field], value, "expected a postgres:// or postgresql:// URL"
            )
    _validate_listen_addr(config, "listen_addr")
    if config.admin_listen:  # empty: no admin server
        _validate_listen_addr(config, "admin_listen")
    if config.root_redirect:
        parts = urlsplit(config.root_redirect)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise setting_error(
                BY_FIELD["root_redirect"],
                config.root_redirect,
                "expected an absolute http:// or https:// URL",
            )


def _validate_lists(config: Config) -> None:
    for cidr in config.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise setting_error(BY_FIELD["trusted_proxies"], cidr, "not a CIDR range") from None
    for name in config.valid_event_names:
        if not (0 < len(name) <= 64 and name.replace("_", "").replace("-", "").isalnum()):
            raise setting_error(
                BY_FIELD["valid_event_names"],
                name,
                "event names are 1-64 letters, digits, '-' or '_'",
            )
    if config.custom_event_names:
        try:
            re.compile(config.custom_event_names)
        except re.error as error:
            raise setting_error(
                BY_FIELD["custom_event_names"],
                config.custom_event_names,
                f"not a regular expression ({error})",
            ) from None


def _validate_autotls(config: Config) -> None:
    _validate_listen_addr(config, "autotls_https_addr")
    _validate_listen_addr(config, "autotls_http_addr")
    if config.autotls_directory_url:
        parts = urlsplit(config.autotls_directory_url)
        if parts.scheme != "https" or not parts.hostname:
            raise setting_error(
                BY_FIELD["autotls_directory_url"],
                config.autotls_directory_url,
                "expected an absolute https:// URL",
            )
    if config.autotls_email and not re.fullmatch(r"[^@\s]+@[^@\s]+", config.autotls_email):
        raise setting_error(
            BY_FIELD["autotls_email"], config.autotls_email, "not an e-mail address"
        )
    if config.autotls_ca_file and not Path(config.autotls_ca_file).is_file():
        raise setting_error(BY_FIELD["autotls_ca_file"], config.autotls_ca_file, "no such file")
    if config.autotls_enabled:
        _validate_autotls_enabled(config)


def _validate_autotls_enabled(config: Config) -> None:
    host = config.autotls_host
    if not host:
        raise setting_error(BY_FIELD["autotls_host"], "", "required when autotlsEnabled is true")
    is_ip = True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        is_ip = False
    if is_ip or not _DNS_NAME.fullmatch(host):
        raise setting_error(
            BY_FIELD["autotls_host"], host, "expected a lowercase DNS name (no port, no IP)"
        )
    if importlib.util.find_spec("acme") is None:
        raise setting_error(
            BY_FIELD["autotls_enabled"],
            True,
            "the ACME client is not installed: pip install 'picolytics[tls]'",
        )
    if config.workers > 1:
        raise setting_error(BY_FIELD["workers"], config.workers, "must be 1 with autotlsEnabled")
    if config.server != "hypercorn":
        raise setting_error(BY_FIELD["server"], config.server, "autotlsEnabled needs hypercorn")
