#!/usr/bin/env bash
# Starts geckodriver (WebDriver for headless Firefox) for the console's browser tests
# and prints the lines to eval:
#
#   eval "$(scripts/start-geckodriver.sh)"
#   cargo test -p sluice-cli --test e2e console
#   "$SLUICE_TEST_GECKODRIVER_STOP"     # stops geckodriver
#
# Prints:
#   export SLUICE_TEST_GECKODRIVER_URL=http://127.0.0.1:PORT
#   export SLUICE_TEST_FIREFOX=/usr/lib/firefox-esr/firefox-esr
#   export SLUICE_TEST_GECKODRIVER_STOP=/tmp/sluice-geckodriver.XXXXXX/stop.sh
#
# As root on Debian it installs the `firefox-esr` package when missing (running
# `apt-get update` only if the install fails). geckodriver is not packaged by Debian: a
# geckodriver on PATH is used, else the one built from crates.io into target/tools/ of
# this checkout (`cargo install`, once per checkout: a few minutes). Everything but the
# export lines goes to stderr.
set -euo pipefail

script=start-geckodriver
# shellcheck source=scripts/servers.sh
. "$(dirname "$0")/servers.sh"

# The version the console tests were last run with; newer ones may need a newer Firefox
# than Debian's ESR.
geckodriver_version=0.37.1
tools="$(cd "$(dirname "$0")/.." && pwd)/target/tools"

if ! command -v firefox-esr > /dev/null; then
    apt_install firefox-esr
fi
# The real binary, not a wrapper script: geckodriver starts it itself.
firefox=$(readlink -f "$(command -v firefox-esr)")

if command -v geckodriver > /dev/null; then
    geckodriver=$(command -v geckodriver)
elif [ -x "$tools/bin/geckodriver" ]; then
    geckodriver="$tools/bin/geckodriver"
else
    log "building geckodriver $geckodriver_version into $tools (once per checkout)"
    cargo install --quiet --root "$tools" --version "$geckodriver_version" --locked geckodriver >&2
    geckodriver="$tools/bin/geckodriver"
fi

port=$(free_port)

dir=$(mktemp -d /tmp/sluice-geckodriver.XXXXXX)
log "starting geckodriver on 127.0.0.1:$port"
# setsid: its own process group, so the stop script ends it and the browsers it started.
setsid "$geckodriver" --host 127.0.0.1 --port "$port" > "$dir/geckodriver.log" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$dir/pid"

ready=""
for _ in $(seq 1 100); do
    if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    cat "$dir/geckodriver.log" >&2
    kill "$pid" 2> /dev/null || true
    exit 1
fi

cat > "$dir/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the geckodriver started by scripts/start-geckodriver.sh (and its browsers).
kill -TERM -- -$pid > /dev/null 2>&1 || kill -TERM $pid > /dev/null 2>&1 || true
rm -rf "$dir"
STOP
chmod 755 "$dir/stop.sh"

log "ready"
echo "export SLUICE_TEST_GECKODRIVER_URL=http://127.0.0.1:$port"
echo "export SLUICE_TEST_FIREFOX=$firefox"
echo "export SLUICE_TEST_GECKODRIVER_STOP=$dir/stop.sh"
