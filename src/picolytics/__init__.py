"""Picolytics: self-hosted, privacy-first web analytics on PostgreSQL."""

__version__ = "0.1.0"
