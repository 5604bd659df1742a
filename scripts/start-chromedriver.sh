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

log() { echo "start-chromedriver: $*" >&2; }

if ! command -v chromedriver > /dev/null || ! command -v chromium > /dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        log "chromium/chromedriver are not installed and installing them needs root (apt-get install chromium chromium-driver)"
        exit 1
    fi
    log "installing chromium and chromium-driver with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q chromium chromium-driver >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get update -q >&2
        apt-get install -y -q chromium chromium-driver >&2
    fi
fi

port=""
for _ in $(seq 1 100); do
    candidate=$((20000 + RANDOM % 40000))
    if ! (echo > "/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
if [ -z "$port" ]; then
    log "found no free port"
    exit 1
fi

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
