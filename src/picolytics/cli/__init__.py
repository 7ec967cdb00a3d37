"""The command line: the only place that configures logging, runs the event loop and
turns picolytics' errors into one clean line and an exit code. `commands` holds the
root group; each other module adds one command group to it."""

from __future__ import annotations

from picolytics.cli import api_keys, backup, goals, imports, shares, users
from picolytics.cli.commands import cli, main

cli.add_command(api_keys.group)
cli.add_command(goals.group)
cli.add_command(users.group)
cli.add_command(shares.group)
cli.add_command(backup.command)
cli.add_command(imports.import_group)
cli.add_command(imports.export_group)

__all__ = ["cli", "main"]
