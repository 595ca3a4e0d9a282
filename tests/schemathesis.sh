#!/usr/bin/env bash
# Fuzzes the live API from its own spec with schemathesis: every operation of
# openapi/openapi.json gets generated requests (a bounded number, fixed seed), and every answer
# must be a non-5xx that matches its documented status code, content type and schema.
# Run after `bash tests/run.sh` (it uses the debug binary that built, and the Python packages it
# installed in target/test-venv). Every operation is fuzzed; tests/schemathesis_hooks.py keeps the fuzzer's admin
# token fresh when its own key changes revoke it, and its admin client out of its reach.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug/tessera
PATH="$PWD/target/test-venv/bin:$PATH"
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
export TESSERA_FUZZ_BASE="$base" TESSERA_FUZZ_ADMIN="$admin"
export SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
cd "$work"  # schemathesis writes its cache next to where it runs
schemathesis run "$OLDPWD/openapi/openapi.json" --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 1 --no-color
