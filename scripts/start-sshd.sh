#!/usr/bin/env bash
# Starts a throwaway OpenSSH server for the tests (the `ssh_command` step's tests) and
# prints the lines to eval:
#
#   eval "$(scripts/start-sshd.sh)"
#   cargo test -p sluice-steps --test builtin ssh
#   "$SLUICE_TEST_SSH_STOP"             # stops the server and deletes its files
#
# Prints:
#   export SLUICE_TEST_SSH_HOST=127.0.0.1
#   export SLUICE_TEST_SSH_PORT=PORT
#   export SLUICE_TEST_SSH_USER=NAME
#   export SLUICE_TEST_SSH_KEY=DIR/user_ed25519          (authorised private key)
#   export SLUICE_TEST_SSH_OTHER_KEY=DIR/other_ed25519   (a key the server does not know)
#   export SLUICE_TEST_SSH_PASSWORD=...                  (empty when not run as root)
#   export SLUICE_TEST_SSH_KNOWN_HOSTS='[127.0.0.1]:PORT ssh-ed25519 AAAA...'
#   export SLUICE_TEST_SSH_STOP=DIR/stop.sh
#
# As root on Debian it installs the `openssh-server` package when missing. The server
# listens on 127.0.0.1 on a free port with a host key generated here. As root it runs
# as root (sshd needs that to check passwords) and logs in a dedicated test user,
# `sluice-ssh-test`, created if missing, with a fresh random password and the test key:
# both password and key authentication. Not as root it runs as the current user, who
# is then the only user it can log in, by key only (SLUICE_TEST_SSH_PASSWORD is empty
# and the password test fails saying so). Everything but the export lines goes to
# stderr.
set -euo pipefail

script=start-sshd
# shellcheck source=scripts/servers.sh
. "$(dirname "$0")/servers.sh"

sshd=/usr/sbin/sshd
if [ ! -x "$sshd" ]; then
    # Another apt-get (a parallel start script) may hold the lock for a while.
    apt_install openssh-server
fi

port=$(free_port)

dir=$(mktemp -d /tmp/sluice-sshd.XXXXXX)
# The logged-in user reads authorized_keys (sshd opens it as that user).
chmod 755 "$dir"

ssh-keygen -q -t ed25519 -N '' -C sluice-test-host -f "$dir/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C sluice-test-user -f "$dir/user_ed25519"
ssh-keygen -q -t ed25519 -N '' -C sluice-test-other -f "$dir/other_ed25519"
cp "$dir/user_ed25519.pub" "$dir/authorized_keys"
chmod 644 "$dir/authorized_keys"

password=""
if [ "$(id -u)" -eq 0 ]; then
    user=sluice-ssh-test
    if ! id "$user" > /dev/null 2>&1; then
        log "creating the test user $user"
        useradd --create-home --shell /bin/sh "$user"
    fi
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    echo "$user:$password" | chpasswd
    password_auth=yes
    # The privilege separation directory sshd expects (made by systemd elsewhere).
    mkdir -p /run/sshd
    chmod 755 /run/sshd
else
    user=$(id -un)
    password_auth=no
fi

cat > "$dir/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
# The files live under /tmp, which StrictModes would refuse.
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication $password_auth
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $user
# The tests' variables (the step sends \`env\` as SSH env requests).
AcceptEnv SLUICE_*
LogLevel VERBOSE
CONFIG

"$sshd" -t -f "$dir/sshd_config" >&2
log "starting sshd on 127.0.0.1:$port (user $user)"
"$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"

ready=""
for _ in $(seq 1 100); do
    if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    cat "$dir/sshd.log" >&2 || true
    log "sshd did not start listening"
    exit 1
fi

cat > "$dir/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the test sshd started by scripts/start-sshd.sh and deletes its files.
if [ -f "$dir/sshd.pid" ]; then
    kill "\$(cat "$dir/sshd.pid")" 2>/dev/null || true
fi
rm -rf "$dir"
STOP
chmod 755 "$dir/stop.sh"

known_hosts="[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")"
log "ready"
echo "export SLUICE_TEST_SSH_HOST=127.0.0.1"
echo "export SLUICE_TEST_SSH_PORT=$port"
echo "export SLUICE_TEST_SSH_USER=$user"
echo "export SLUICE_TEST_SSH_KEY=$dir/user_ed25519"
echo "export SLUICE_TEST_SSH_OTHER_KEY=$dir/other_ed25519"
echo "export SLUICE_TEST_SSH_PASSWORD=$password"
echo "export SLUICE_TEST_SSH_KNOWN_HOSTS='$known_hosts'"
echo "export SLUICE_TEST_SSH_STOP=$dir/stop.sh"
