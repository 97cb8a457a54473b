#!/bin/sh
# From nothing to a command run and audited, on one machine over loopback. Run it from
# the repository after `cargo build --release` (or set BIN to where the binaries are):
#     sh examples/walkthrough.sh
# The server listens on a free port (PORT=N to choose one), so a development server
# already on 7433 is never the one that answers.
set -eu
BIN=${BIN:-target/release}
PORT=${PORT:-0}
WORK=$(mktemp -d)
SERVER=""
trap 'if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

echo "== 1. a root key (the admin's), the key of zone web (the server's), and a credential"
echo "==    for the client web-ops (role web-operator in zone web)"
"$BIN/cmdchan-server" admin init --root "$WORK/root.key"
"$BIN/cmdchan-server" admin zone-key --root "$WORK/root.key" --zone web --out "$WORK/zone.key"
"$BIN/cmdchan-server" admin provision --root "$WORK/root.key" --zone web --name web-ops \
    --role web-operator --server web1 --expires 30d --out "$WORK/web-ops.cred"

echo "== 2. the example config, with its paths moved into $WORK"
sed -e "s|/etc/cmdchan|$WORK|; s|/var/log/cmdchan|$WORK|; s|0.0.0.0:7433|127.0.0.1:$PORT|" \
    examples/server.toml > "$WORK/server.toml"
cp examples/policy.toml "$WORK/policy.toml"
"$BIN/cmdchan-server" serve --config "$WORK/server.toml" --replay-store "file:$WORK/replay" 2> "$WORK/server.log" &
SERVER=$!
# The address the server got, from its "listening on ADDR" line.
ADDR=""
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -n 1)
    [ -n "$ADDR" ] && break
    sleep 0.5
done
[ -n "$ADDR" ] || { cat "$WORK/server.log"; echo "the server did not start"; exit 1; }
C="$BIN/cmdchan --cred $WORK/web-ops.cred --server $ADDR"

echo "== 3. what may this client run? (the server is on $ADDR)"
$C commands
$C describe restart-service

echo "== 4. run two of them"
$C disk-usage /
$C --arg lines=3 tail-log /var/log/dpkg.log

echo "== 5. refused before anything runs: a value outside the role's list, and an injection"
$C restart-service apache2 || echo "exit $? (policy)"
$C disk-usage '/; rm -rf /' || echo "exit $? (policy)"

echo "== 6. the audit trail is intact"
kill "$SERVER"; wait "$SERVER" || true
SERVER=""
"$BIN/cmdchan-server" admin audit-verify "$WORK/audit.log" --zone-key "$WORK/zone.key"
