#!/usr/bin/env bash
# Starts a throwaway MariaDB server for the tests (the `sql` step's MySQL/MariaDB test)
# and prints the lines to eval:
#
#   eval "$(scripts/start-mariadb.sh)"
#   cargo test -p sluice-steps --test builtin mysql
#   "$SLUICE_TEST_MYSQL_STOP"        # stops the server and deletes its files
#
# Prints:
#   export SLUICE_TEST_MYSQL_URL=mysql://sluice:PASSWORD@127.0.0.1:PORT/sluice
#   export SLUICE_TEST_MYSQL_STOP=/tmp/sluice-mariadb.XXXXXX/stop.sh
#
# As root on Debian it installs the `mariadb-server` package when missing (running
# `apt-get update` only if the install fails). The server's data directory lives in a
# temporary directory; it reads no system option file (`--no-defaults`), listens on
# 127.0.0.1 on a free port, and runs as the `mysql` OS user when started by root. The
# test user `sluice` has a random password and all privileges on the `sluice` database
# only. Everything but the export lines goes to stderr.
set -euo pipefail

script=start-mariadb
# shellcheck source=scripts/servers.sh
. "$(dirname "$0")/servers.sh"

find_server() {
    local name
    for name in mariadbd mysqld; do
        if command -v "$name" > /dev/null 2>&1; then
            command -v "$name"
            return
        elif [ -x "/usr/sbin/$name" ]; then
            echo "/usr/sbin/$name"
            return
        fi
    done
}

server=$(find_server)
if [ -z "$server" ] || ! command -v mariadb-install-db > /dev/null 2>&1; then
    # The package's own service is not wanted (this script starts its own server), and in
    # a container without an init system invoke-rc.d refuses to start it anyway.
    apt_install mariadb-server
    server=$(find_server)
    if [ -z "$server" ]; then
        log "mariadb-server was installed but no mariadbd was found"
        exit 1
    fi
fi

port=$(free_port)

dir=$(mktemp -d /tmp/sluice-mariadb.XXXXXX)
chmod 755 "$dir"
user_args=()
if [ "$(id -u)" -eq 0 ]; then
    # mariadbd refuses to run as root.
    chown mysql: "$dir"
    user_args=(--user=mysql)
fi

log "initialising a data directory in $dir/data"
mariadb-install-db --no-defaults "${user_args[@]}" --datadir="$dir/data" \
    --auth-root-authentication-method=socket --skip-test-db > "$dir/install.log" 2>&1 || {
    cat "$dir/install.log" >&2
    exit 1
}

log "starting MariaDB on 127.0.0.1:$port"
# Durability is pointless for a throwaway test server: turn it off for speed.
"$server" --no-defaults "${user_args[@]}" --datadir="$dir/data" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid" --log-error="$dir/server.log" \
    --bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
    --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 --innodb-doublewrite=0 \
    > /dev/null 2>&1 &

ready=""
for _ in $(seq 1 600); do
    if mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -u root ping > /dev/null 2>&1; then
        ready=yes
        break
    fi
    if [ -s "$dir/mysqld.pid" ] && ! kill -0 "$(cat "$dir/mysqld.pid")" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    log "the server did not start"
    cat "$dir/server.log" >&2 || true
    exit 1
fi

# Hex only: the password goes into a URL and an SQL string literal unescaped.
password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mariadb --no-defaults --socket="$dir/mysqld.sock" -u root <<SQL
CREATE DATABASE sluice CHARACTER SET utf8mb4;
CREATE USER 'sluice'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON sluice.* TO 'sluice'@'127.0.0.1';
SQL

cat > "$dir/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the test MariaDB server started by scripts/start-mariadb.sh and deletes it.
mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -u root shutdown > /dev/null 2>&1 || {
    [ -s "$dir/mysqld.pid" ] && kill "\$(cat "$dir/mysqld.pid")" 2>/dev/null || true
}
rm -rf "$dir"
STOP
chmod 755 "$dir/stop.sh"

log "ready"
echo "export SLUICE_TEST_MYSQL_URL=mysql://sluice:$password@127.0.0.1:$port/sluice"
echo "export SLUICE_TEST_MYSQL_STOP=$dir/stop.sh"
