"""What every command shares: the group class that turns picolytics' errors into one
clean line and an exit code, and the loading of the configuration."""

from __future__ import annotations

import os
from typing import Any

import click

from picolytics.config import Config, load_config
from picolytics.errors import PicolyticsError
from picolytics.logs import configure_logging


class PicolyticsGroup(click.Group):
    """Shows a PicolyticsError as one `picolytics: error: ...` line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PicolyticsError as error:
            click.echo(f"picolytics: error: {error}", err=True)
            ctx.exit(error.exit_code)


def config_of(ctx: click.Context) -> Config:
    """Load and validate the configuration, then set up logging from it."""
    config = load_config(ctx.find_root().params.get("config_file"), os.environ)
    configure_logging(config.log_format, config.debug)
    return config
