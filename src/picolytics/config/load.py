"""Loading the configuration: defaults < YAML file < environment, then validation.

Finds the config file (`-c FILE`, or CONFIG_PATH/CONFIG_NAME.yaml), refuses keys it
does not know, parses each setting from wherever it was given last, and validates the
result up front, so a bad value stops the program at startup with a message naming
the setting instead of failing later in the middle of traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from picolytics.config.model import Config
from picolytics.config.parse import parse_value, setting_error
from picolytics.config.settings import BY_KEY, SETTINGS
from picolytics.config.validate import validate
from picolytics.errors import ConfigError


def load_config(explicit_file: str | None, environ: Mapping[str, str]) -> Config:
    """Build the Config from defaults, then the config file, then the environment."""
    path = find_config_file(explicit_file, environ)
    from_file = _read_yaml(path) if path else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env in environ:
            parsed = parse_value(setting, environ[setting.env])
        elif setting.key in from_file:
            parsed = parse_value(setting, from_file[setting.key])
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
        raise setting_error(BY_KEY["allowedSites"], domain, "not a domain name") from None
