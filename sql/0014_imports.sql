-- Imported history (docs/imports.md): daily aggregates read from another tool's
-- export (Plausible's CSV files, GoatCounter's CSV), kept beside the read model and
-- added by the query layer where a query asks for them. The ten tables have the
-- columns of Plausible's documented CSV import format, in its order and with its
-- names, after site_id, import_id and the day (`date` in the files).

-- One row per import: where it came from and what it covers.
CREATE TABLE imports (
    site_id     integer NOT NULL REFERENCES sites (site_id),
    import_id   integer GENERATED ALWAYS AS IDENTITY,
    source      text NOT NULL CHECK (source IN ('plausible', 'goatcounter')),
    file_name   text NOT NULL,  -- the file or folder as given, for `site list`
    sha256      text NOT NULL,  -- of the file's bytes (of the sorted CSV files: a folder or zip)
    first_day   date NOT NULL,
    last_day    date NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, import_id),
    CHECK (first_day <= last_day)
);

-- Which import owns each imported day of a site: at most one, so an imported day
-- never counts twice, and an import that covers a day replaces the one before.
CREATE TABLE imported_days (
    site_id   integer NOT NULL,
    day       date NOT NULL,
    import_id integer NOT NULL,
    PRIMARY KEY (site_id, day),
    FOREIGN KEY (site_id, import_id) REFERENCES imports (site_id, import_id) ON DELETE CASCADE
);

CREATE TABLE imported_visitors (
    site_id        integer NOT NULL,
    import_id      integer NOT NULL,
    day            date NOT NULL,
    visitors       bigint NOT NULL CHECK (visitors >= 0),
    pageviews      bigint NOT NULL CHECK (pageviews >= 0),
    bounces        bigint NOT NULL CHECK (bounces >= 0),
    visits         bigint NOT NULL CHECK (visits >= 0),
    visit_duration bigint NOT NULL CHECK (visit_duration >= 0)
);

CREATE TABLE imported_sources (
    site_id        integer NOT NULL,
    import_id      integer NOT NULL,
    day            date NOT NULL,
    source         text NOT NULL,
    referrer       text NOT NULL,
    utm_source     text NOT NULL,
    utm_medium     text NOT NULL,
    utm_campaign   text NOT NULL,
    utm_content    text NOT NULL,
    utm_term       text NOT NULL,
    pageviews      bigint NOT NULL CHECK (pageviews >= 0),
    visitors       bigint NOT NULL CHECK (visitors >= 0),
    visits         bigint NOT NULL CHECK (visits >= 0),
    visit_duration bigint NOT NULL CHECK (visit_duration >= 0),
    bounces        bigint NOT NULL CHECK (bounces >= 0)
);

CREATE TABLE imported_pages (
    site_id   integer NOT NULL,
    import_id integer NOT NULL,
    day       date NOT NULL,
    hostname  text NOT NULL,
    page      text NOT NULL,
    visits    bigint NOT NULL CHECK (visits >= 0),
    visitors  bigint NOT NULL CHECK (visitors >= 0),
    pageviews bigint NOT NULL CHECK (pageviews >= 0)
);

CREATE TABLE imported_entry_pages (
    site_id        integer NOT NULL,
    import_id      integer NOT NULL,
    day            date NOT NULL,
    entry_page     text NOT NULL,
    visitors       bigint NOT NULL CHECK (visitors >= 0),
    entrances      bigint NOT NULL CHECK (entrances >= 0),
    visit_duration bigint NOT NULL CHECK (visit_duration >= 0),
    bounces        bigint NOT NULL CHECK (bounces >= 0),
    pageviews      bigint NOT NULL CHECK (pageviews >= 0)
);

CREATE TABLE imported_exit_pages (
    site_id        integer NOT NULL,
    import_id      integer NOT NULL,
    day            date NOT NULL,
    exit_page      text NOT NULL,
    visitors       bigint NOT NULL CHECK (visitors >= 0),
    visit_duration bigint NOT NULL CHECK (visit_duration >= 0),
    exits          bigint NOT NULL CHECK (exits >= 0),
    bounces        bigint NOT NULL CHECK (bounces >= 0),
    pageviews      bigint NOT NULL CHECK (pageviews >= 0)
);

CREATE TABLE imported_custom_events (
    site_id   integer NOT NULL,
    import_id integer NOT NULL,
    day       date NOT NULL,
    name      text NOT NULL,
    link_url  text NOT NULL,
    path      text NOT NULL,
    visitors  bigint NOT NULL CHECK (visitors >= 0),
    events    bigint NOT NULL CHECK (events >= 0)
);

-- country: ISO 3166-1 alpha-2; region: ISO 3166-2 (as Plausible's files hold them);
-- city: a GeoNames id as text, '' or '0' for none.
CREATE TABLE imported_locations (
    site_id        integer NOT NULL,
    import_id      integer NOT NULL,
    day            date NOT NULL,
    country        text NOT NULL,
    region         text NOT NULL,
    city           text NOT NULL,
    visitors       bigint NOT NULL CHECK (visitors >= 0),
    visits         bigint NOT NULL CHECK (visits >= 0),
    visit_duration bigint NOT NULL CHECK (visit_duration >= 0),
    bounces        bigint NOT NULL CHECK (bounces >= 0),
    pageviews      bigint NOT NULL CHECK (pageviews >= 0)
);

CREATE TABLE imported_devices (
    site_id        integer NOT NULL,
    import_id      integer NOT NULL,
    day            date NOT NULL,
    device         text NOT NULL,
    visitors       bigint NOT NULL CHECK (visitors >= 0),
    visits         bigint NOT NULL CHECK (visits >= 0),
    visit_duration bigint NOT NULL CHECK (visit_duration >= 0),
    bounces        bigint NOT NULL CHECK (bounces >= 0),
    pageviews      bigint NOT NULL CHECK (pageviews >= 0)
);

CREATE TABLE imported_browsers (
    site_id         integer NOT NULL,
    import_id       integer NOT NULL,
    day             date NOT NULL,
    browser         text NOT NULL,
    browser_version text NOT NULL,
    visitors        bigint NOT NULL CHECK (visitors >= 0),
    visits          bigint NOT NULL CHECK (visits >= 0),
    visit_duration  bigint NOT NULL CHECK (visit_duration >= 0),
    bounces         bigint NOT NULL CHECK (bounces >= 0),
    pageviews       bigint NOT NULL CHECK (pageviews >= 0)
);

CREATE TABLE imported_operating_systems (
    site_id                  integer NOT NULL,
    import_id                integer NOT NULL,
    day                      date NOT NULL,
    operating_system         text NOT NULL,
    operating_system_version text NOT NULL,
    visitors                 bigint NOT NULL CHECK (visitors >= 0),
    visits                   bigint NOT NULL CHECK (visits >= 0),
    visit_duration           bigint NOT NULL CHECK (visit_duration >= 0),
    bounces                  bigint NOT NULL CHECK (bounces >= 0),
    pageviews                bigint NOT NULL CHECK (pageviews >= 0)
);

-- Every imported row is read by site and day, and deleted by import.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['visitors', 'sources', 'pages', 'entry_pages', 'exit_pages',
                                'custom_events', 'locations', 'devices', 'browsers',
                                'operating_systems'] LOOP
        EXECUTE format('CREATE INDEX %I ON %I (site_id, day)',
                       'imported_' || name || '_site_day', 'imported_' || name);
        EXECUTE format('CREATE INDEX %I ON %I (site_id, import_id)',
                       'imported_' || name || '_import', 'imported_' || name);
        -- The reader (Grafana, the Stats API) reads them: aggregates, nothing about
        -- any one visitor.
        INSERT INTO reader_grants (object, privilege) VALUES ('imported_' || name, 'SELECT');
    END LOOP;
END $$;

INSERT INTO reader_grants (object, privilege) VALUES ('imports', 'SELECT'), ('imported_days', 'SELECT');

SELECT picolytics_grant_reader();
