-- The analytics schema. Every table that grows with traffic carries site_id and
-- includes it in its primary key (and the partition key too where partitioned), so
-- the schema can later be distributed by site (Citus) without rewriting keys.

-- One row per tracked domain: lowercased, IDNA, without "www.".
CREATE TABLE sites (
    site_id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain     text NOT NULL UNIQUE CHECK (domain <> '' AND domain = lower(domain)),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per visit.
CREATE TABLE sessions (
    site_id         integer NOT NULL REFERENCES sites (site_id),
    session_id      bigint NOT NULL,
    visitor_id      bigint NOT NULL,
    started_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    duration_s      integer GENERATED ALWAYS AS
                        (floor(extract(epoch FROM last_seen_at - started_at))::integer) STORED,
    pageviews       integer NOT NULL DEFAULT 0,
    events          integer NOT NULL DEFAULT 0,
    engaged         boolean NOT NULL DEFAULT false,
    bounce          boolean GENERATED ALWAYS AS (pageviews <= 1 AND NOT engaged) STORED,
    entry_path      text NOT NULL DEFAULT '',
    exit_path       text NOT NULL DEFAULT '',
    referrer_host   text NOT NULL DEFAULT '',
    utm_source      text NOT NULL DEFAULT '',
    utm_medium      text NOT NULL DEFAULT '',
    utm_campaign    text NOT NULL DEFAULT '',
    utm_content     text NOT NULL DEFAULT '',
    utm_term        text NOT NULL DEFAULT '',
    country         text NOT NULL DEFAULT '',
    region          text NOT NULL DEFAULT '',
    city            text NOT NULL DEFAULT '',
    browser         text NOT NULL DEFAULT '',
    browser_version text NOT NULL DEFAULT '',
    os              text NOT NULL DEFAULT '',
    os_version      text NOT NULL DEFAULT '',
    device_type     text NOT NULL DEFAULT '',
    screen_width    integer,
    screen_height   integer,
    timezone        text NOT NULL DEFAULT '',
    PRIMARY KEY (site_id, session_id)
);
CREATE INDEX sessions_site_started ON sessions (site_id, started_at);
CREATE INDEX sessions_site_last_seen ON sessions (site_id, last_seen_at);

-- The open visit of each visitor, one row per (site, visitor). Session assignment is an
-- INSERT ... ON CONFLICT on this table, so concurrent writers agree on one session.
CREATE TABLE visitor_sessions (
    site_id      integer NOT NULL,
    visitor_id   bigint NOT NULL,
    session_id   bigint NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (site_id, visitor_id)
);
CREATE INDEX visitor_sessions_last_seen ON visitor_sessions (last_seen_at);

-- One row per event, partitioned by day of receipt so retention drops whole partitions.
CREATE TABLE events (
    site_id       integer NOT NULL,
    received_at   timestamptz NOT NULL,
    event_id      bigint NOT NULL,
    session_id    bigint NOT NULL,
    visitor_id    bigint NOT NULL,
    name          text NOT NULL,
    path          text NOT NULL,
    referrer_host text NOT NULL DEFAULT '',
    load_time_ms  integer,
    ttfb_ms       integer,
    engaged_ms    integer,
    scroll_depth  smallint,
    props         jsonb,
    PRIMARY KEY (site_id, received_at, event_id)
) PARTITION BY RANGE (received_at);
CREATE INDEX events_site_name_received ON events (site_id, name, received_at);
CREATE INDEX events_site_session ON events (site_id, session_id);
-- Safety net: a row whose day has no partition yet is kept, never rejected.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Traffic recognised as bots is not stored as visits, only counted.
CREATE TABLE bot_counts (
    site_id integer NOT NULL REFERENCES sites (site_id),
    day     date NOT NULL,
    reason  text NOT NULL,
    hits    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, reason)
);

-- Daily salts of the visitor hash. UNLOGGED: never in WAL, backups or replicas, and
-- gone after a crash (visitor ids then restart for the day, which privacy prefers).
CREATE UNLOGGED TABLE daily_salts (
    day        date PRIMARY KEY,
    salt       bytea NOT NULL CHECK (octet_length(salt) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Creates the daily partitions of events from first_day for the given number of days.
-- Any process may call it at any time; the advisory lock keeps concurrent callers from
-- racing on the same partition.
CREATE FUNCTION picolytics_ensure_event_partitions(first_day date, days integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    created integer := 0;
    partition_name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('picolytics_event_partitions'));
    FOR offset_days IN 0 .. days - 1 LOOP
        day := first_day + offset_days;
        partition_name := 'events_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                partition_name,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

SELECT picolytics_ensure_event_partitions((now() AT TIME ZONE 'UTC')::date - 1, 4);
