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

dir=$(mktemp -d /tmp/sluice-chromedriver.XXXXXX)
log "starting ChromeDriver on 127.0.0.1:$port"
# setsid: its own process group, so the stop script ends it and the browsers it started.
setsid chromedriver --port="$port" --allowed-ips=127.0.0.1 > "$dir/chromedriver.log" 2>&1 < /dev/null &
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
    cat "$dir/chromedriver.log" >&2
    kill "$pid" 2> /dev/null || true
    exit 1
fi

cat > "$dir/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the ChromeDriver started by scripts/start-chromedriver.sh (and its browsers).
kill -TERM -- -$pid > /dev/null 2>&1 || kill -TERM $pid > /dev/null 2>&1 || true
rm -rf "$dir"
STOP
chmod 755 "$dir/stop.sh"

log "ready"
echo "export SLUICE_TEST_WEBDRIVER_URL=http://127.0.0.1:$port"
echo "export SLUICE_TEST_CHROMIUM=$(command -v chromium)"
echo "export SLUICE_TEST_WEBDRIVER_STOP=$dir/stop.sh"
