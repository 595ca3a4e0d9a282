#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests use besides Rust
# (PyJWT, Authlib, jose and openid-client for interoperability, the Prometheus client's parser,
# the SDK generators openapi-python-client and openapi-typescript, playwright-core and Debian's
# chromium for the browser tests), then runs `cargo test`. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
npm ci --prefix tests/sdk/typescript --no-audit --no-fund --loglevel=error
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "Debian's chromium is needed for the browser tests: sudo apt-get install -y chromium" >&2
    exit 1
  fi
fi
cargo test --locked "$@"
