"""The Stats API: Plausible's v2 `POST /api/v2/query` (api/v2_endpoint.py, which builds
on the v2_* modules) and its v1 endpoints. `auth` comes first: who is asking, whether
that key may read the site, and its per-key rate limit."""
