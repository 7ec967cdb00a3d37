"""The Stats API (planned: Plausible's v2 `POST /api/v2/query` and the v1 endpoints).

`auth` comes first: who is asking (an API key as a Bearer token, storage/api_keys.py),
whether that key may read the site, and its per-key rate limit.
"""
