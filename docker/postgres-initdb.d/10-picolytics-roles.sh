#!/usr/bin/env bash
# Creates the picolytics database and its roles. The postgres image runs this once,
# when it initialises an empty data folder, as the superuser (POSTGRES_USER), before
# picolytics starts. Anyone can run it the same way against a new server:
#   POSTGRES_PICOLYTICS_PASSWORD=... POSTGRES_GRAFANA_PASSWORD=... \
#     PGHOST=... PGUSER=postgres ./10-picolytics-roles.sh
#
#   picolytics          LOGIN, owner of the database picolytics and its schema public;
#                       no superuser, no CREATEROLE: picolytics' migrations create the
#                       tables and grant the reporting views to picolytics_reader.
#   picolytics_reader   NOLOGIN group role that dashboards read through (created here
#                       because picolytics may not create roles).
#   picolyticsgrafana   LOGIN, member of picolytics_reader only: Grafana's data source.
set -euo pipefail

: "${POSTGRES_PICOLYTICS_PASSWORD:?POSTGRES_PICOLYTICS_PASSWORD must be set}"
: "${POSTGRES_GRAFANA_PASSWORD:?POSTGRES_GRAFANA_PASSWORD must be set}"
# .env-sample's placeholders are public: a role with one would have a known password.
for name in POSTGRES_PICOLYTICS_PASSWORD POSTGRES_GRAFANA_PASSWORD; do
    if [[ "${!name}" == REPLACE_* ]]; then
        echo "$name is still a REPLACE_ placeholder: set a real password" >&2
        exit 1
    fi
done

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v app_user="${PICOLYTICS_DB_USER:-picolytics}" \
    -v app_password="$POSTGRES_PICOLYTICS_PASSWORD" \
    -v app_database="${PICOLYTICS_DB_NAME:-picolytics}" \
    -v reader_user="${GRAFANA_DB_USER:-picolyticsgrafana}" \
    -v reader_password="$POSTGRES_GRAFANA_PASSWORD" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE ROLE picolytics_reader NOLOGIN;
CREATE ROLE :"reader_user" LOGIN PASSWORD :'reader_password' IN ROLE picolytics_reader;
CREATE DATABASE :"app_database" OWNER :"app_user";
REVOKE ALL ON DATABASE :"app_database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"app_database" TO picolytics_reader;
\connect :"app_database"
ALTER SCHEMA public OWNER TO :"app_user";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO picolytics_reader;
SQL
