"""Settings: declared as data, loaded from defaults < a YAML file < the environment,
validated at startup, and handed to the rest of picolytics as one frozen `Config`.

This package is ground (docs/architecture.md): it imports only other ground modules.
Import from the package itself; its modules are internal:

- choices.py   the closed sets of the choice settings, as Literal types
- settings.py  every setting declared as data (env variable, YAML key, kind, help)
- model.py     the Config type and DEFAULTS
- parse.py     one raw value into its field's type
- load.py      finding and reading the config file, the environment, precedence
- validate.py  checks of the whole Config (formats, combinations, needed extras)
- template.py  the commented default config file
- listen.py    "host:port" listening addresses
"""

from __future__ import annotations

from picolytics.config.choices import IpExtractor, LogFormat, ServerName, SslMode
from picolytics.config.listen import split_listen_addr
from picolytics.config.load import load_config
from picolytics.config.model import DEFAULTS, Config
from picolytics.config.template import default_config_yaml, write_default_config

__all__ = [
    "DEFAULTS",
    "Config",
    "IpExtractor",
    "LogFormat",
    "ServerName",
    "SslMode",
    "default_config_yaml",
    "load_config",
    "split_listen_addr",
    "write_default_config",
]
