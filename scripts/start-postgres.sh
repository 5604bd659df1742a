#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests (the `sql` step's PostgreSQL test)
# and prints the lines to eval:
#
#   eval "$(scripts/start-postgres.sh)"
#   cargo test -p sluice-steps
#   "$SLUICE_TEST_POSTGRES_STOP"        # stops the server and deletes its files
#
# Prints:
#   export SLUICE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/sluice
#   export SLUICE_TEST_POSTGRES_STOP=/tmp/sluice-pg.XXXXXX/stop.sh
#
# As root on Debian it installs the `postgresql` package when missing (running
# `apt-get update` only if the install fails). The cluster lives in a temporary
# directory, listens on 127.0.0.1 on a free port with trust authentication, and runs as
# the `postgres` OS user when started by root (initdb refuses to run as root).
# Everything but the export lines goes to stderr.
set -euo pipefail

script=start-postgres
# shellcheck source=scripts/servers.sh
. "$(dirname "$0")/servers.sh"

find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    fi
}

bindir=$(find_bindir)
if [ -z "$bindir" ]; then
    # No default cluster: this script makes its own, on a free port.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    apt_install postgresql
    bindir=$(find_bindir)
    if [ -z "$bindir" ]; then
        log "postgresql was installed but no initdb was found under /usr/lib/postgresql"
        exit 1
    fi
fi

# Run a PostgreSQL program as the postgres user when we are root, else as ourselves.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port=$(free_port)

dir=$(mktemp -d /tmp/sluice-pg.XXXXXX)
chmod 755 "$dir"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
fi

log "initialising a cluster in $dir/data"
as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    --no-sync > "$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
}

log "starting PostgreSQL on 127.0.0.1:$port"
# Durability is pointless for a throwaway test server: turn it off for speed.
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start > /dev/null || {
    cat "$dir/server.log" >&2
    exit 1
}

as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres sluice

cat > "$dir/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the test PostgreSQL server started by scripts/start-postgres.sh and deletes it.
if [ "\$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m fast stop > /dev/null 2>&1 || true
else
    "$bindir/pg_ctl" -D "$dir/data" -m fast stop > /dev/null 2>&1 || true
fi
rm -rf "$dir"
STOP
chmod 755 "$dir/stop.sh"

log "ready"
echo "export SLUICE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/sluice"
echo "export SLUICE_TEST_POSTGRES_STOP=$dir/stop.sh"
