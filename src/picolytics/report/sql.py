"""The SQL of `picolytics report` itself: whether the schema is there, and which sites
there are. Every number of the report comes from the query layer (stats/), which
alone assembles statistics SQL.
"""

from __future__ import annotations

# `sites` comes with migration 0001; the sites' zones and the rollups with 0006.
SCHEMA_STATE = """
SELECT to_regclass('sites') IS NOT NULL,
       to_regclass('rollup_days') IS NOT NULL
"""
SELECT_SITES = "SELECT site_id, domain, timezone FROM sites ORDER BY site_id"
