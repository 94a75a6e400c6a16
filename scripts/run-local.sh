#!/bin/bash
# `make run`: starts stanzad in the foreground on localhost with embedded
# storage, open registration and a self-signed certificate, and prints how
# to connect. State persists in build/run-state between runs.
#   usage: scripts/run-local.sh BUILD_DIR [extra stanzad flags...]
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
state="$build/run-state"
mkdir -p "$state"

"$build/stanzad" --domain localhost --state-dir "$state" \
	--listen-c2s 127.0.0.1:5222 --listen-c2s-tls 127.0.0.1:5223 \
	--registration open "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 0' INT TERM

# Wait (bounded) for the certificate and the listener to be ready.
i=0
while [ $i -lt 50 ]; do
	if ! kill -0 $pid 2>/dev/null; then
		wait $pid || true
		echo "stanzad did not start (see the messages above)" >&2
		exit 1
	fi
	[ -f "$state/cert.pem" ] && (exec 3<>/dev/tcp/127.0.0.1/5222) 2>/dev/null && break
	sleep 0.1
	i=$((i + 1))
done
fp=$(openssl x509 -in "$state/cert.pem" -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2)
cat <<MSG

  stanzad is running for domain 'localhost' (state in $state).

  Connect any XMPP client to 127.0.0.1, port 5222 (STARTTLS) or 5223
  (Direct TLS). Accounts: register in the client (in-band registration is
  open here), or create one with
      $build/stanzactl --state-dir $state user add alice
  and log in as alice@localhost. The certificate is self-signed; its
  SHA-256 fingerprint is
      $fp
  Stop with Ctrl-C.

MSG
wait $pid
