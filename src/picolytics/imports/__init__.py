"""Moving in and out: other tools' exports read into imported daily aggregates, and a
site's own numbers written in Plausible's CSV export format (docs/imports.md)."""
