#!/bin/bash
# Creates a login role and a database for MLflow and for Prefect. The postgres image runs
# this once, from /docker-entrypoint-initdb.d, on the first start of an empty data volume.
# Names and passwords reach SQL as psql variables (:"ident", :'literal'), so psql quotes them.
set -eo pipefail

: "${POSTGRES_USER:?}"
: "${MLFLOW_DB_NAME:?}" "${MLFLOW_DB_USER:?}" "${MLFLOW_DB_PASSWORD:?}"
: "${PREFECT_DB_NAME:?}" "${PREFECT_DB_USER:?}" "${PREFECT_DB_PASSWORD:?}"

create_database() {  # <role> <password> <database>
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
    --set=role="$1" --set=password="$2" --set=db="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
SQL
}

create_database "$MLFLOW_DB_USER" "$MLFLOW_DB_PASSWORD" "$MLFLOW_DB_NAME"
create_database "$PREFECT_DB_USER" "$PREFECT_DB_PASSWORD" "$PREFECT_DB_NAME"

# Prefect's migrations create pg_trgm; do it as the superuser so its role needs no more rights.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$PREFECT_DB_NAME" \
  -c 'CREATE EXTENSION IF NOT EXISTS pg_trgm;'
