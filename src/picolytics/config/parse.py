"""One raw value (an environment string, or a YAML scalar or list) into its field's type.

Every failure is a ConfigError that names the environment variable and the YAML key,
and shows the value unless the setting is a secret.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from picolytics.config.settings import Kind, Setting
from picolytics.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting_error(setting: Setting, raw: object, why: str) -> ConfigError:
    """The one message format of a bad value: `ENV (key) = 'value': why`."""
    shown = "<hidden>" if setting.secret else repr(raw)
    return ConfigError(f"{setting.env} ({setting.key}) = {shown}: {why}")


def parse_value(setting: Setting, raw: object) -> object:
    """Turn one raw value into the field's type, checking its kind, bounds and choices."""
    if setting.kind == "list":
        return _parse_list(setting, raw)
    if isinstance(raw, (dict, list)):
        raise setting_error(setting, raw, "expected a single value")
    text = "" if raw is None else str(raw).strip()
    return _SCALAR_PARSERS[setting.kind](setting, raw, text)


def _check_range(setting: Setting, raw: object, number: float) -> None:
    if setting.minimum is not None and number < setting.minimum:
        raise setting_error(setting, raw, f"must be at least {setting.minimum:g}")
    if setting.maximum is not None and number > setting.maximum:
        raise setting_error(setting, raw, f"must be at most {setting.maximum:g}")


def _parse_list(setting: Setting, raw: object) -> tuple[str, ...]:
    if raw is None:  # "key:" with no value in YAML
        items = []
    elif isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, list):
        items = [str(item) for item in raw]
    else:
        raise setting_error(setting, raw, "expected a list or a comma-separated string")
    return tuple(item.strip() for item in items if item.strip())


def _parse_bool(setting: Setting, raw: object, text: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise setting_error(setting, raw, "expected true or false")


def _parse_int(setting: Setting, raw: object, text: str) -> int:
    if isinstance(raw, bool) or not text.lstrip("+-").isdigit():
        raise setting_error(setting, raw, "expected a whole number")
    number = int(text)
    _check_range(setting, raw, number)
    return number


def _parse_float(setting: Setting, raw: object, text: str) -> float:
    try:
        real = float(text)
    except ValueError:
        raise setting_error(setting, raw, "expected a number") from None
    if not math.isfinite(real):
        raise setting_error(setting, raw, "expected a finite number")
    _check_range(setting, raw, real)
    return real


def _parse_choice(setting: Setting, raw: object, text: str) -> str:
    # The choices are get_args of the field's Literal, so a value that passes has its type.
    if text.lower() not in setting.choices:
        raise setting_error(setting, raw, "expected one of " + ", ".join(setting.choices))
    return text.lower()


def _parse_str(setting: Setting, raw: object, text: str) -> str:
    return text


_SCALAR_PARSERS: dict[Kind, Callable[[Setting, object, str], object]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "float": _parse_float,
    "choice": _parse_choice,
    "str": _parse_str,
}
