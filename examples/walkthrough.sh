#!/bin/sh
# From nothing to a command run and audited, on one machine over loopback. Run it from
# the repository after `cargo build --release` (or set BIN to where the binaries are):
#     sh examples/walkthrough.sh
set -eu
BIN=${BIN:-target/release}
PORT=${PORT:-7433}
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== 1. a master key, and a credential for the client web-ops (role web-operator)"
"$BIN/cmdchan-server" admin init --master "$WORK/master.key"
"$BIN/cmdchan-server" admin provision --master "$WORK/master.key" --name web-ops \
    --role web-operator --server web1 --expires 30d --address "127.0.0.1:$PORT" --out "$WORK/web-ops.cred"

echo "== 2. the example config, with its paths moved into $WORK"
sed -e "s|/etc/cmdchan|$WORK|; s|/var/log/cmdchan|$WORK|; s|0.0.0.0:7433|127.0.0.1:$PORT|" \
    examples/server.toml > "$WORK/server.toml"
cp examples/policy.toml "$WORK/policy.toml"
"$BIN/cmdchan-server" serve --config "$WORK/server.toml" --replay-store "file:$WORK/replay" 2> "$WORK/server.log" &
SERVER=$!
sleep 1

echo "== 3. what may this client run?"
"$BIN/cmdchan" --cred "$WORK/web-ops.cred" commands
"$BIN/cmdchan" --cred "$WORK/web-ops.cred" describe restart-service

echo "== 4. run two of them"
"$BIN/cmdchan" --cred "$WORK/web-ops.cred" disk-usage /
"$BIN/cmdchan" --cred "$WORK/web-ops.cred" --arg lines=3 tail-log /var/log/dpkg.log

echo "== 5. refused before anything runs: a value outside the role's list, and an injection"
"$BIN/cmdchan" --cred "$WORK/web-ops.cred" restart-service apache2 || echo "exit $? (policy)"
"$BIN/cmdchan" --cred "$WORK/web-ops.cred" disk-usage '/; rm -rf /' || echo "exit $? (policy)"

echo "== 6. the audit trail is intact"
kill "$SERVER"; wait "$SERVER" || true
"$BIN/cmdchan-server" admin audit-verify "$WORK/audit.log" --master "$WORK/master.key"
