-- Automatic TLS (AUTOTLS_ENABLED): the ACME account, the certificates and the pending
-- HTTP-01 challenges, shared by every picolytics instance on this database so that
-- restarts reuse them and any instance can answer the CA's validation request.
--
-- Private keys live here in PEM. Nothing is granted to picolytics_reader (its grants
-- are explicit, see 0002_views.sql), and picolytics_grant_reader() never names these
-- tables: the read-only dashboard role cannot read them.

-- One ACME account per directory URL (Let's Encrypt staging and production, or
-- another CA, each has its own).
CREATE TABLE tls_accounts (
    directory_url text PRIMARY KEY,
    key_pem       text NOT NULL,
    account_url   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The current certificate of each host, per directory URL: the full chain (leaf first)
-- and its private key. A renewal replaces the row.
CREATE TABLE tls_certificates (
    directory_url text NOT NULL,
    host          text NOT NULL,
    chain_pem     text NOT NULL,
    key_pem       text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (directory_url, host)
);

-- HTTP-01 answers while an order is pending: GET /.well-known/acme-challenge/<token>
-- on port 80 of any instance answers key_authorization. Rows are removed when the
-- order ends; expired ones are ignored and cleaned up by the next order.
CREATE TABLE tls_challenges (
    token             text PRIMARY KEY,
    key_authorization text NOT NULL,
    expires_at        timestamptz NOT NULL
);

COMMENT ON TABLE tls_accounts IS 'ACME account keys (secret): not readable by picolytics_reader.';
COMMENT ON TABLE tls_certificates IS
    'TLS certificates and their private keys (secret): not readable by picolytics_reader.';
COMMENT ON TABLE tls_challenges IS 'Pending ACME HTTP-01 challenge answers.';

-- Belt and braces against default privileges an administrator may have set up.
REVOKE ALL ON tls_accounts, tls_certificates, tls_challenges FROM PUBLIC;
DO $$
BEGIN
    IF to_regrole('picolytics_reader') IS NOT NULL THEN
        REVOKE ALL ON tls_accounts, tls_certificates, tls_challenges FROM picolytics_reader;
    END IF;
END;
$$;
