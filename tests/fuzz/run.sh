#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 60). Not part of
# every CI run; record what was run and found in docs/operations.md's Security section.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
for target in form basic_auth jwt redirect_uri scope; do
  echo "== $target ($seconds s)"
  cargo +nightly fuzz run --fuzz-dir . "$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 2>&1 | tail -3
done
