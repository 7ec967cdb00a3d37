-- The dashboard's accounts, login sessions, one-time setup links and shared links
-- (docs/dashboard-accounts.md). No secret is stored in clear:
--   * a password only as its scrypt hash, with its own random salt and the cost
--     parameters it was made with ("scrypt$N$r$p$salt$key", base64url), so that a
--     later, stronger cost can be used without invalidating the old hashes;
--   * a session token, a setup token and a shared link's token only as their SHA-256:
--     each is 256 random bits, so a fast digest gives nothing to guess from (as for
--     api_keys in 0009), and the lookup of every request is one unique index.

-- One row per account. The application case-folds the address (Unicode casefold,
-- after NFKC) before it reaches this table, so the unique constraint is on the folded
-- form: "Ann@Example.com" and "ann@example.com" are one account.
CREATE TABLE dashboard_users (
    user_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email               text NOT NULL UNIQUE
                        CHECK (length(email) <= 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    password_hash       text NOT NULL
                        CHECK (password_hash ~ '^scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per login. Expiry is the server's: a cookie kept past expires_at finds no
-- row. A changed password or a removed account ends every session of the account.
CREATE TABLE dashboard_sessions (
    session_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id      bigint NOT NULL REFERENCES dashboard_users (user_id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions (user_id);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- The link the server logs at startup while no account exists: it creates the first
-- account, once (used_at), before expires_at, and only while there is no account.
CREATE TABLE dashboard_setup_tokens (
    token_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,  -- NULL: not used yet
    CHECK (expires_at > created_at)
);

-- A site's read-only shared link, /share/TOKEN. Revoking keeps the row (who could see
-- what, and until when). The optional password is hashed like an account's.
CREATE TABLE dashboard_shares (
    share_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id       integer NOT NULL REFERENCES sites (site_id),
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    password_hash text
                  CHECK (password_hash ~ '^scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz  -- NULL: in use
);
CREATE INDEX dashboard_shares_site ON dashboard_shares (site_id);

COMMENT ON TABLE dashboard_users IS
    'Dashboard accounts: case-folded e-mail, scrypt hash of the password (never the '
    'password). Not readable by picolytics_reader.';
COMMENT ON TABLE dashboard_sessions IS
    'Dashboard logins: SHA-256 of the session token (never the token), account, '
    'created, expires, last seen. Not readable by picolytics_reader.';
COMMENT ON TABLE dashboard_setup_tokens IS
    'One-time links that create the first dashboard account: SHA-256 of the token, '
    'expiry, when used. Not readable by picolytics_reader.';
COMMENT ON TABLE dashboard_shares IS
    'Read-only shared links of a site: SHA-256 of the token, optional scrypt hash of a '
    'password, created, revoked. Not readable by picolytics_reader.';

-- For the server alone: never granted to picolytics_reader, and refused by
-- reader_grants should a later migration try (as 0009 does for api_keys).
REVOKE ALL ON dashboard_users, dashboard_sessions, dashboard_setup_tokens, dashboard_shares
    FROM PUBLIC;
ALTER TABLE reader_grants
    ADD CONSTRAINT reader_grants_no_dashboard_accounts CHECK (object NOT IN (
        'dashboard_users', 'dashboard_sessions', 'dashboard_setup_tokens',
        'dashboard_shares'));
