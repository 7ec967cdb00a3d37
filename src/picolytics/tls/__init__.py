"""Automatic TLS: certificates ordered over ACME, shared through PostgreSQL."""
