from __future__ import annotations

from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from picolytics.config import (
    DEFAULTS,
    Config,
    default_config_yaml,
    load_config,
    split_listen_addr,
    write_default_config,
)
from picolytics.config.settings import SETTINGS  # the table itself, to test it
from picolytics.errors import ConfigError


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_match_the_original_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no config.yaml here
    config = load_config(None, {})
    assert config.pg_port == 5432
    assert config.pg_ssl_mode == "prefer"
    assert config.pg_conn_attempts == 5
    assert config.listen_addr == ":8080"
    assert config.log_format == "json"
    assert config.static_dir == "static"
    assert config.static_cache_max_age == 3600
    assert config.request_rate_limit == 10
    assert config.body_max_size == 2048
    assert config.ip_extractor == "direct"
    assert config.geo_ip_file == "geoip.mmdb"
    assert (config.prune_days, config.prune_check_hours, config.session_timeout_min) == (0, 24, 30)
    assert (config.queue_size, config.batch_max_size, config.batch_max_msec) == (640000, 6400, 500)
    assert config.disable_host_metrics is True
    assert config.autotls_staging is True
    assert "load" in config.valid_event_names
    assert config.uses_embedded_database


def test_every_setting_maps_to_a_config_field() -> None:
    fields = set(Config.__dataclass_fields__)
    assert {setting.field for setting in SETTINGS} == fields
    assert len({setting.env for setting in SETTINGS}) == len(SETTINGS)
    assert len({setting.key for setting in SETTINGS}) == len(SETTINGS)


def test_choice_settings_accept_exactly_their_fields_literal() -> None:
    """The validated choices are the field's Literal type, said once in choices.py."""
    hints = get_type_hints(Config)
    choices = {setting.field: setting.choices for setting in SETTINGS if setting.kind == "choice"}
    assert set(choices) == {"pg_ssl_mode", "log_format", "ip_extractor", "server"}
    for field, allowed in choices.items():
        assert allowed == get_args(hints[field]), field


def test_choice_values_are_case_insensitive() -> None:
    config = load_config(None, {"SERVER": "Hypercorn", "LOG_FORMAT": "TEXT", "IP_EXTRACTOR": "XFF"})
    assert (config.server, config.log_format, config.ip_extractor) == ("hypercorn", "text", "xff")


def test_precedence_defaults_then_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "pgPort: 6000\nqueueSize: 10000\nlogFormat: text\n")
    config = load_config(path, {"PGPORT": "7000"})
    assert config.pg_port == 7000  # environment beats file
    assert config.queue_size == 10000  # file beats default
    assert config.log_format == "text"
    assert config.batch_max_msec == 500  # default


def test_config_name_and_path_find_the_file(tmp_path: Path) -> None:
    write(tmp_path / "mine.yaml", "sessionTimeoutMin: 45\n")
    config = load_config(None, {"CONFIG_NAME": "mine", "CONFIG_PATH": str(tmp_path)})
    assert config.session_timeout_min == 45


def test_config_name_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config file absent\.yaml"):
        load_config(None, {"CONFIG_NAME": "absent", "CONFIG_PATH": str(tmp_path)})


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"), {})


def test_lists_from_environment_and_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml", "validEventNames: [load, ping]\ntrustedProxies: [10.0.0.0/8]\n"
    )
    config = load_config(path, {})
    assert config.valid_event_names == ("load", "ping")
    assert config.trusted_proxies == ("10.0.0.0/8",)
    config = load_config(None, {"VALID_EVENT_NAMES": "load, hidden ,", "TRUSTED_PROXIES": ""})
    assert config.valid_event_names == ("load", "hidden")
    assert config.trusted_proxies == ()


def test_empty_event_names_mean_the_defaults() -> None:
    assert (
        load_config(None, {"VALID_EVENT_NAMES": ""}).valid_event_names == DEFAULTS.valid_event_names
    )


def test_custom_event_names_are_off_unless_a_pattern_is_set() -> None:
    default = load_config(None, {}).event_names()
    assert default.custom is None
    assert {"load", "nav", "engagement", "outbound", "download"} <= default.valid
    names = load_config(None, {"CUSTOM_EVENT_NAMES": "[a-z]+(_[a-z]+)*"}).event_names()
    assert names.accepts("sign_up")
    assert names.accepts("load")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PGPORT": "abc"}, r"PGPORT \(pgPort\) = 'abc': expected a whole number"),
        ({"PGPORT": "70000"}, r"PGPORT \(pgPort\) = '70000': must be at most 65535"),
        ({"PGPORT": "0"}, r"PGPORT .*must be at least 1"),
        ({"PGSSLMODE": "sometimes"}, r"PGSSLMODE \(pgSslMode\) = 'sometimes': expected one of"),
        ({"LOG_FORMAT": "xml"}, r"LOG_FORMAT \(logFormat\) = 'xml'"),
        ({"IP_EXTRACTOR": "forwarded"}, r"IP_EXTRACTOR \(ipExtractor\) = 'forwarded'"),
        ({"SERVER": "gunicorn"}, r"SERVER \(server\) = 'gunicorn': expected one of hypercorn, uv"),
        ({"TRUSTED_PROXIES": "10.0.0.0/8,not-a-net"}, r"TRUSTED_PROXIES .*'not-a-net': not a CIDR"),
        ({"ROOT_REDIRECT": "example.com"}, r"ROOT_REDIRECT .*absolute http"),
        ({"ROOT_REDIRECT": "javascript:alert(1)"}, r"ROOT_REDIRECT"),
        ({"ROOT_REDIRECT": "ftp://example.com/"}, r"ROOT_REDIRECT"),
        ({"BODY_MAX_SIZE": "-1"}, r"BODY_MAX_SIZE .*at least"),
        ({"BODY_MAX_SIZE": "2kb"}, r"BODY_MAX_SIZE .*whole number"),
        ({"QUEUE_SIZE": "0"}, r"QUEUE_SIZE .*at least 1"),
        ({"QUEUE_SIZE": "10", "BATCH_MAX_SIZE": "20"}, r"BATCH_MAX_SIZE .*cannot exceed queueSize"),
        ({"REQUEST_RATE_LIMIT": "nan"}, r"REQUEST_RATE_LIMIT .*finite"),
        ({"REQUEST_RATE_LIMIT": "-3"}, r"REQUEST_RATE_LIMIT .*at least 0"),
        ({"SKIP_MIGRATIONS": "maybe"}, r"SKIP_MIGRATIONS .*true or false"),
        ({"LISTEN_ADDR": "8080"}, r"LISTEN_ADDR .*host:port"),
        ({"LISTEN_ADDR": "::1:8080"}, r"LISTEN_ADDR .*brackets"),
        ({"ADMIN_LISTEN": "localhost:99999"}, r"ADMIN_LISTEN .*between 0 and 65535"),
        ({"VALID_EVENT_NAMES": "load,bad name"}, r"VALID_EVENT_NAMES .*'bad name'"),
        ({"CUSTOM_EVENT_NAMES": "sign(up"}, r"CUSTOM_EVENT_NAMES .*'sign\(up': not a regular"),
        ({"AUTOTLS_ENABLED": "true"}, r"AUTOTLS_HOST .*required"),
        ({"PGCONNSTRING": "mysql://x@y/z"}, r"PGCONNSTRING \(pgConnString\) = <hidden>"),
        (
            {"PGREADCONNSTRING": "mysql://x@y/z"},
            r"PGREADCONNSTRING \(pgReadConnString\) = <hidden>: expected a postgres",
        ),
        ({"SESSION_TIMEOUT_MIN": "0"}, r"SESSION_TIMEOUT_MIN .*at least 1"),
        ({"DATA_DIR": ""}, r"DATA_DIR .*must name a folder"),
    ],
)
def test_validation_errors_name_the_setting_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env)


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"PGCONNSTRING": "mysql://user:topsecret@host/db"})
    assert "topsecret" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"PGREADCONNSTRING": "mysql://user:topsecret@replica/db"})
    assert "topsecret" not in str(caught.value)


def test_unknown_yaml_keys_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "pgPort: 5432\nqueueSzie: 5\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*queueSzie"):
        load_config(path, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pgPort: [1, 2]\n", "expected a single value"),
        ("- a\n- b\n", "must hold a mapping"),
        ("pgPort: : :\n", "not valid YAML"),
        ("pgPort: true\n", "whole number"),
        ("validEventNames: {a: 1}\n", "expected a list"),
    ],
)
def test_malformed_yaml_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "c.yaml", text), {})


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "c.yaml", ""), {}) == DEFAULTS


def test_default_config_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_default_config(path)
    text = path.read_text()
    assert set(yaml.safe_load(text)) == {setting.key for setting in SETTINGS}
    for setting in SETTINGS:
        assert f"(env {setting.env})" in text  # every setting is documented
    assert load_config(str(path), {}) == DEFAULTS


def test_default_config_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        write_default_config(path)
    assert path.read_text() == "mine"


def test_default_config_text_is_yaml() -> None:
    assert isinstance(yaml.safe_load(default_config_yaml()), dict)


@pytest.mark.parametrize("password", ["p/ss@wo:rd%20x", "é ü?#&=", "plain"])
def test_connection_url_escapes_every_part(password: str) -> None:
    config = load_config(
        None,
        {
            "PGHOST": "db.example",
            "PGPORT": "6543",
            "PGDATABASE": "my/db",
            "PGUSER": "us@er",
            "PGPASSWORD": password,
            "PGSSLMODE": "require",
        },
    )
    assert not config.uses_embedded_database
    parsed = conninfo_to_dict(config.database_url())  # libpq's own parser reads it back
    assert parsed == {
        "host": "db.example",
        "port": "6543",
        "dbname": "my/db",
        "user": "us@er",
        "password": password,
        "sslmode": "require",
    }


def test_connection_url_ipv6_and_socket_hosts() -> None:
    assert conninfo_to_dict(Config(pg_host="::1", pg_database="d").database_url())["host"] == "::1"
    socket_host = Config(pg_host="/var/run/postgresql", pg_database="d").database_url()
    assert conninfo_to_dict(socket_host)["host"] == "/var/run/postgresql"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_both_url_schemes_are_accepted(scheme: str) -> None:
    config = load_config(None, {"PGCONNSTRING": f"{scheme}://u:p@h:5433/d"})
    assert conninfo_to_dict(config.database_url())["port"] == "5433"


def test_split_listen_addr() -> None:
    assert split_listen_addr(":8080") == ("", 8080)
    assert split_listen_addr("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_listen_addr("[::1]:9000") == ("::1", 9000)
    assert split_listen_addr("localhost:80") == ("localhost", 80)


def test_allowed_sites_are_normalised_like_tracked_sites() -> None:
    config = load_config(None, {"ALLOWED_SITES": "WWW.Example.com., Bücher.example"})
    assert config.allowed_sites == ("example.com", "xn--bcher-kva.example")
