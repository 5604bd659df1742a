#!/usr/bin/env bash
# Starts ChromeDriver (WebDriver for headless Chromium) for the console's browser tests
# and prints the lines to eval:
#
#   eval "$(scripts/start-chromedriver.sh)"
#   cargo test -p sluice-cli --test e2e console
#   "$SLUICE_TEST_WEBDRIVER_STOP"       # stops ChromeDriver
#
# Prints:
#   export SLUICE_TEST_WEBDRIVER_URL=http://127.0.0.1:PORT
#   export SLUICE_TEST_CHROMIUM=/usr/bin/chromium
#   export SLUICE_TEST_WEBDRIVER_STOP=/tmp/sluice-chromedriver.XXXXXX/stop.sh
#
# As root on Debian it installs the `chromium` and `chromium-driver` packages when
# missing (running `apt-get update` only if the install fails). Everything but the export
# lines goes to stderr.
set -euo pipefail

script=start-chromedriver
# shellcheck source=scripts/servers.sh
. "$(dirname "$0")/servers.sh"

if ! command -v chromedriver > /dev/null || ! command -v chromium > /dev/null; then
    apt_install chromium chromium-driver
fi

port=$(free_port)
start_driver chromedriver "$port" chromedriver --port="$port" --allowed-ips=127.0.0.1

log "ready"
echo "export SLUICE_TEST_WEBDRIVER_URL=http://127.0.0.1:$port"
echo "export SLUICE_TEST_CHROMIUM=$(command -v chromium)"
echo "export SLUICE_TEST_WEBDRIVER_STOP=$driver_stop"
