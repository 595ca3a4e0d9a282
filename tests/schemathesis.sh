#!/usr/bin/env bash
# Fuzzes the live API from its own spec with schemathesis: every operation of
# openapi/openapi.json gets generated requests (a bounded number, fixed seed), and every answer
# must be a non-5xx that matches its documented status code, content type and schema.
# Run after `bash tests/run.sh` (it uses the debug binary that built, and the pip packages it
# installed). Left out: the key operations (promoting and retiring keys would invalidate the
# fuzzer's own admin token halfway) and deleting or replacing clients (it would hit its own
# admin client); tests/api/admin.rs and keys.rs test those.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug/tessera
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
printf 'registration = "open"\nrate_limit_per_client = 0\nrate_limit_per_address = 0\n' > "$work/tessera.toml"
export TESSERA_CONFIG="$work/tessera.toml" TESSERA_DATA_DIR="$work/data" TESSERA_KEYS_DIR="$work/keys"
admin=$("$bin" app create --admin --name schemathesis --json)
echo 'a long password' | "$bin" user create --username fuzz --password-stdin >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$bin" serve --addr "127.0.0.1:$port" &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
token=$(python3 - "$base" "$admin" <<'PY'
import base64, json, sys, urllib.request
base, admin = sys.argv[1], json.loads(sys.argv[2])
basic = base64.b64encode(f"{admin['client_id']}:{admin['client_secret']}".encode()).decode()
request = urllib.request.Request(f"{base}/o/token/", data=b"grant_type=client_credentials&scope=tessera%3Aadmin",
                                 headers={"Authorization": f"Basic {basic}"})
print(json.load(urllib.request.urlopen(request))["access_token"])
PY
)
cd "$work"  # schemathesis writes its cache next to where it runs
schemathesis run "$OLDPWD/openapi/openapi.json" --url "$base" -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-path-regex '^/api/v1/keys' --exclude-operation-id deleteClient --exclude-operation-id updateClient --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 1 --no-color
