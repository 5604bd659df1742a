# Shared by the scripts/start-*.sh scripts, which source it after setting `script` to
# their name. Everything goes to stderr: their stdout is the export lines to eval.

log() { echo "$script: $*" >&2; }

# apt_install PACKAGE...: installs Debian packages (needs root), waiting for another
# apt-get (a parallel start script) to release its lock, and running `apt-get update`
# only when the install fails (the lists may be missing or old).
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        log "$* not installed, and installing needs root (apt-get install $*)"
        exit 1
    fi
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get update -q -o DPkg::Lock::Timeout=300 >&2
        apt-get install -y -q -o DPkg::Lock::Timeout=300 "$@" >&2
    fi
}

# free_port: prints a port of 127.0.0.1 on which nothing answers.
free_port() {
    local candidate
    for _ in $(seq 1 100); do
        candidate=$((20000 + RANDOM % 40000))
        if ! (echo > "/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    log "found no free port"
    exit 1
}

# start_driver NAME PORT COMMAND...: starts a WebDriver server (COMMAND, listening on
# 127.0.0.1:PORT) in its own process group, waits until it accepts connections, and
# sets `driver_stop` to a script that stops it and the browsers it started.
start_driver() {
    local name=$1 port=$2 dir pid ready=""
    shift 2
    dir=$(mktemp -d "/tmp/sluice-$name.XXXXXX")
    log "starting $name on 127.0.0.1:$port"
    # setsid: its own process group, so the stop script ends it and its browsers.
    setsid "$@" > "$dir/$name.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$dir/pid"
    for _ in $(seq 1 100); do
        if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if [ -z "$ready" ]; then
        cat "$dir/$name.log" >&2
        kill "$pid" 2> /dev/null || true
        exit 1
    fi
    cat > "$dir/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the $name started by scripts/start-$name.sh (and its browsers).
kill -TERM -- -$pid > /dev/null 2>&1 || kill -TERM $pid > /dev/null 2>&1 || true
rm -rf "$dir"
STOP
    chmod 755 "$dir/stop.sh"
    driver_stop="$dir/stop.sh"
}
