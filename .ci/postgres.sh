# Sourced by .ci/run: a PostgreSQL server of our own on loopback for tests/test_search_postgres.py.
# Installs Debian's postgresql when missing, creates a throw-away cluster on a free port with
# trust authentication (loopback only), exports HILPRUNE_TEST_POSTGRES, and drops the cluster
# when the shell exits. When PostgreSQL cannot be installed, HILPRUNE_TEST_POSTGRES_SKIP says why
# and the test skips with that reason.

pg_cluster=hilprune-ci
pg_port=${HILPRUNE_CI_PG_PORT:-55433}

pg_install() {
  command -v pg_createcluster >/dev/null 2>&1 && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null 2>&1 && return 0
  apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1
}

pg_stop() {
  if [ -n "${pg_version:-}" ]; then
    pg_dropcluster --stop "$pg_version" "$pg_cluster" >/dev/null 2>&1 || true
  fi
}

if pg_install; then
  pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_dropcluster --stop "$pg_version" "$pg_cluster" >/dev/null 2>&1 || true  # left by an interrupted run
  pg_createcluster "$pg_version" "$pg_cluster" -p "$pg_port" -- -A trust >/dev/null
  pg_ctlcluster "$pg_version" "$pg_cluster" start -o "-c listen_addresses=127.0.0.1"
  trap pg_stop EXIT
  su postgres -c "psql -q -p $pg_port -h 127.0.0.1 -c 'CREATE DATABASE hilprune_test'"
  export HILPRUNE_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$pg_port/hilprune_test"
  echo "PostgreSQL $pg_version on 127.0.0.1:$pg_port for the storage test"
else
  export HILPRUNE_TEST_POSTGRES_SKIP="PostgreSQL could not be installed here (apt-get install postgresql failed)"
  echo "$HILPRUNE_TEST_POSTGRES_SKIP"
fi
