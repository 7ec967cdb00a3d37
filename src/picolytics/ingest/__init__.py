"""The ingest endpoints (/p and /api/event) and the rules for what they accept."""
