-- API keys of the Stats API (docs/api-keys.md). A key is shown once, when it is
-- created (`picolytics api-key create`); only its SHA-256 is kept. A key is 256 random
-- bits, so a fast hash suffices: there is nothing to guess from a digest, and no salt
-- or slow hash is needed the way passwords need them. Revoking keeps the row (who had
-- access, and until when), so a name stays taken.
CREATE TABLE api_keys (
    key_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE
               CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,63}$'),
    -- SHA-256 of the whole key as presented (prefix included); the unique index is the
    -- lookup of every authenticated request.
    key_hash   bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The first characters of the key ("pico_" and 7 of its 43 random ones), to tell
    -- keys apart in a list; far too few to help anyone guess the rest.
    key_prefix text NOT NULL CHECK (length(key_prefix) = 12),
    -- The sites the key may read, as normalised domains (lowercase, IDNA, no "www."),
    -- the way sites.domain spells them: a site may be named before its first event.
    -- NULL: every site.
    sites      text[] CHECK (sites IS NULL OR cardinality(sites) > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz  -- NULL: in use
);

COMMENT ON TABLE api_keys IS
    'Stats API keys: name, SHA-256 of the key (never the key), a display prefix, the '
    'sites it may read (NULL: all), created and revoked. Not readable by picolytics_reader.';

-- A secret's digest is for the server alone: never granted to picolytics_reader, and
-- refused by reader_grants should a later migration try (a constraint of its own, so
-- that it adds to reader_grants_no_secrets without redefining it).
REVOKE ALL ON api_keys FROM PUBLIC;
ALTER TABLE reader_grants
    ADD CONSTRAINT reader_grants_no_api_keys CHECK (object <> 'api_keys');
