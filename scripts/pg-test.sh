#!/usr/bin/env bash
# Runs the PostgreSQL ledger tests (cycles-core/tests/postgres_*.rs, and the PostgreSQL cases
# of tests/state_check_*.rs) against a real server, then the clients on the same server: the
# `cycles` CLI (cycles-cli/tests/cli_postgres.rs), the
# Python binding (cycles-py/tests-postgres/, built into .venv by scripts/test-python.sh) and the
# Node binding (cycles-node/__pg_test__/, built by scripts/test-node.sh).
#
# With CYCLES_PG_URL set, the tests use that server (each test creates its own schema) and the
# tests that stop and restart the server are not run (the script says so). Without it, the
# script installs the Debian `postgresql` package if needed, starts a throwaway server on
# 127.0.0.1 and a free port in a temporary data directory (as the `postgres` user when run as
# root), runs every test, and always stops the server and removes the directory.
#
# Extra arguments go to the ledger tests' harness, e.g. `scripts/pg-test.sh --nocapture`.
# `scripts/pg-test.sh --bench [FILTER]` runs the throughput bench (cycles-core/benches/postgres.rs)
# instead of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# `pg-tests` (which implies `postgres`) builds the suites that need a server.
CARGO_TEST=(cargo test -p cycles-core --features pg-tests)
MODE=test
if [ "${1:-}" = "--bench" ]; then
    MODE=bench
    shift
fi

# The binding tests name their schemas after this run, so that they can be dropped on a
# server this script does not manage (a managed one is thrown away as a whole).
export CYCLES_PG_TEST_RUN="${CYCLES_PG_TEST_RUN:-$(date +%s)_$$}"

# The clients of the ledger, on the same server: each opens it from a postgres:// URL. The
# binding builds are incremental (scripts/test-all.sh has just built them); `timeout` turns a
# binding that blocks where it must not (GIL, event loop) into a failure, not a hang.
run_clients() {
    echo "pg-test: the cycles CLI on PostgreSQL"
    cargo test -p cycles-cli --test cli_postgres -- --include-ignored
    echo "pg-test: the Python binding on PostgreSQL"
    scripts/test-python.sh --build-only
    timeout 600 .venv/bin/python -m pytest cycles-py/tests-postgres -q
    echo "pg-test: the Node binding on PostgreSQL"
    scripts/test-node.sh --build-only
    (cd cycles-node && timeout 600 node --test __pg_test__/)
}

# Drops the binding tests' schemas of this run (only needed on an unmanaged server).
drop_client_schemas() {
    local psql
    psql=$(command -v psql || true)
    if [ -z "$psql" ]; then
        echo "pg-test: psql not found: the schemas t_py_${CYCLES_PG_TEST_RUN}_* and t_node_${CYCLES_PG_TEST_RUN}_* stay on the server"
        return 0
    fi
    PGOPTIONS="-c client_min_messages=warning" "$psql" "$CYCLES_PG_URL" -qAt -v ON_ERROR_STOP=1 -c "DO \$\$ DECLARE s text; BEGIN
        FOR s IN SELECT nspname FROM pg_namespace
                 WHERE nspname LIKE 't\\_py\\_${CYCLES_PG_TEST_RUN}\\_%'
                    OR nspname LIKE 't\\_node\\_${CYCLES_PG_TEST_RUN}\\_%' LOOP
            EXECUTE format('DROP SCHEMA %I CASCADE', s);
        END LOOP; END \$\$" || true
}

run_bench() {
    cargo bench -p cycles-core --features postgres --bench postgres -- "$@"
}

if [ -n "${CYCLES_PG_URL:-}" ]; then
    echo "pg-test: using CYCLES_PG_URL (server not managed by this script)"
    if [ "$MODE" = bench ]; then
        run_bench "$@"
        exit
    fi
    echo "pg-test: NOT RUN: postgres_outage (stops and restarts the server; needs a managed server)"
    targets=()
    for f in cycles-core/tests/postgres_*.rs cycles-core/tests/state_check_*.rs; do
        name=$(basename "$f" .rs)
        [ "$name" = postgres_outage ] || targets+=(--test "$name")
    done
    "${CARGO_TEST[@]}" "${targets[@]}" -- "$@"
    trap drop_client_schemas EXIT
    run_clients
    exit
fi

pg_bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN=$(pg_bindir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "pg-test: PostgreSQL is not installed and this is not root: install the 'postgresql' package or set CYCLES_PG_URL" >&2
        exit 1
    fi
    echo "pg-test: installing the Debian postgresql package"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    BIN=$(pg_bindir)
fi

# initdb refuses to run as root: run the server as the `postgres` system user.
AS=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    AS=(runuser -u postgres --)
fi

DATA=$(mktemp -d /tmp/cycles-pg.XXXXXX)
chmod 700 "$DATA"
[ ${#AS[@]} -eq 0 ] || chown postgres: "$DATA"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo "pg-test: no free port found" >&2
    return 1
}
PORT=$(free_port)

stop_server() {
    local rc=$?
    if [ -f "$DATA/postmaster.pid" ]; then
        "${AS[@]}" "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$DATA/server.log" ]; then
        echo "pg-test: last lines of the server log:" >&2
        tail -n 30 "$DATA/server.log" >&2 || true
    fi
    rm -rf "$DATA"
    exit "$rc"
}
trap stop_server EXIT INT TERM

"${AS[@]}" "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
# Durability settings are the server defaults (fsync on, synchronous_commit on).
SERVER_OPTS="-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DATA -c max_connections=300"
"${AS[@]}" "$BIN/pg_ctl" -D "$DATA" -o "$SERVER_OPTS" -l "$DATA/server.log" -w -t 60 start >/dev/null
echo "pg-test: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data in $DATA"

export CYCLES_PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
# For postgres_outage: how to stop and start this server.
export CYCLES_PG_MANAGED=1 CYCLES_PG_BIN="$BIN" CYCLES_PG_DATA="$DATA" CYCLES_PG_OPTS="$SERVER_OPTS"
export CYCLES_PG_RUN_AS="${AS[*]}"

if [ "$MODE" = bench ]; then
    run_bench "$@"
else
    # The state_check_* suites run on memory and SQLite in the main test run, and on this
    # server here (their PostgreSQL cases need the pg-tests feature).
    "${CARGO_TEST[@]}" --test 'postgres_*' --test 'state_check_*' -- "$@"
    run_clients
fi
