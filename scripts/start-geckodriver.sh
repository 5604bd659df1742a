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
start_driver geckodriver "$port" "$geckodriver" --host 127.0.0.1 --port "$port"

log "ready"
echo "export SLUICE_TEST_GECKODRIVER_URL=http://127.0.0.1:$port"
echo "export SLUICE_TEST_FIREFOX=$firefox"
echo "export SLUICE_TEST_GECKODRIVER_STOP=$driver_stop"
