#!/usr/bin/env bash
# The whole test suite, on a fresh machine with the distribution's own Python and Node.
#
# Installs what the tests use besides Rust, without touching the system: the Python packages of
# tests/requirements.txt (PyJWT, Authlib, the Prometheus client's parser, openapi-python-client,
# schemathesis) into a virtual environment at target/test-venv, reused while the requirements
# stay the same; the npm packages of tests/browser, tests/interop and tests/sdk/typescript
# (playwright-core, jose, openid-client, openapi-typescript); Debian's chromium when no Chromium
# is found and Debian's postgresql when it is missing, when this runs as root. Then runs
# `cargo test` (extra arguments go to it) and, on a full run, the README's own commands and
# tutorial against a fresh data folder (tests/browser/readme.test.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # need WHAT HOW: stop with a clear message
  echo "error: $1 is needed for the tests. $2" >&2
  exit 1
}
as_root_install() { # as_root_install PACKAGE...: apt-get install when root, else say how
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    need "$*" "Install it with: sudo apt-get install -y $*"
  fi
}

# Node 20 or newer (playwright-core needs it).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
  need "Node.js 20 or newer with npm" "Install it from your distribution (Debian 13, Ubuntu 24.04: sudo apt-get install -y nodejs npm) or https://nodejs.org/."
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] ||
  need "Node.js 20 or newer (found $(node --version))" "Install a newer one from https://nodejs.org/ or with nvm; Debian 12's nodejs is 18."

# Python packages in a virtual environment: PEP 668 distributions refuse installs into the
# system Python, and nothing here should change it anyway.
command -v python3 >/dev/null 2>&1 || need "Python 3" "Install it with: sudo apt-get install -y python3 python3-venv"
venv=target/test-venv
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  # Debian and Ubuntu ship venv's pip bootstrap separately.
  as_root_install "python3-venv"
fi
wanted=$( (python3 --version; cat tests/requirements.txt) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$wanted" ]; then
  echo "== setting up $venv (Python test packages)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$wanted" > "$venv/.requirements"
fi
# The tests run `python3`, `openapi-python-client` and `schemathesis` from the environment.
PATH="$PWD/$venv/bin:$PATH"
export PATH

npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
npm ci --prefix tests/sdk/typescript --no-audit --no-fund --loglevel=error

# Chromium for the browser tests: CHROMIUM_PATH, else the usual names and places.
find_chromium() {
  if [ -n "${CHROMIUM_PATH:-}" ]; then
    [ -x "$CHROMIUM_PATH" ] || need "Chromium" "CHROMIUM_PATH=$CHROMIUM_PATH is not an executable file."
    echo "$CHROMIUM_PATH"
    return
  fi
  for candidate in chromium chromium-browser google-chrome-stable google-chrome \
    /usr/bin/chromium /usr/lib/chromium/chromium /snap/bin/chromium \
    /Applications/Chromium.app/Contents/MacOS/Chromium; do
    if command -v "$candidate" >/dev/null 2>&1; then
      command -v "$candidate"
      return
    fi
  done
}
chromium=$(find_chromium)
if [ -z "$chromium" ]; then
  as_root_install chromium
  chromium=$(find_chromium)
  [ -n "$chromium" ] || need "Chromium" "Install Debian's chromium (sudo apt-get install -y chromium) or set CHROMIUM_PATH to a Chromium or Chrome binary."
fi
export CHROMIUM_PATH="$chromium"

# PostgreSQL for the cluster-mode tests, which start their own throwaway server from it.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  as_root_install postgresql
fi

cargo test --locked "$@"
# The HTTP integration tests again with every in-process server in cluster mode, on its own
# database of a throwaway PostgreSQL (the tests that start their own clusters, run the
# contract on both backends, or concern the embedded default ran above).
TESSERA_TEST_BACKEND=postgres cargo test --locked --test api "$@" -- \
  --skip cluster:: --skip store_contract:: --skip first_start::

# The README's commands, exactly as written, on a full run (not when cargo test was narrowed).
if [ "$#" = 0 ]; then
  node --test tests/browser/readme.test.mjs
fi
