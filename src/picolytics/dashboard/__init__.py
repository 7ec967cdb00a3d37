"""The dashboard at /dashboard/ (docs/dashboard.md; docs/dashboard-accounts.md for its
accounts). Its
login comes first, in the order the modules build on each other:

- throttle.py  failed logins per account and per client, with exponential backoff
- pages.py     the plain HTML forms, their security headers, reading a form body
- session.py   the session cookie, CSRF tokens, `current_user` and `api_user`
- auth.py      login, logout and the first account's setup, as Starlette handlers
- shared.py    shared links (/share/TOKEN): the site a link shows, its password
- setup.py     what the server wires in: the setup link logged at startup, the routes
- api_access.py who may ask the Stats API from the pages: the session (with its CSRF
                header) or a shared link
- assets.py    static/ (the script, styles and vendored uPlot) served from memory with ETags
- ui.py        the pages: /dashboard/ and /share/TOKEN, the shell the script draws into
"""
