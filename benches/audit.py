#!/usr/bin/env python3
"""The audit trail's cost, measured (a benchmark, not a test: it asserts nothing).

Runs the release server on loopback with an admin client, then:
  - writes N audited changes through the admin API (PATCH of a user's name, N/2 each way),
    from 8 threads, and reports changes per second (each one: the change, a durable write,
    and its audit entry);
  - reads the trail with GET /api/v1/audit: the newest page of 200, a page deep in it (by
    cursor), a filter that matches every other entry, and one that matches nothing (a full
    scan of the trail), each the median of 5 calls;
  - reads it with `tessera audit list --limit 200` once the server is stopped.
Usage: python3 benches/audit.py [--entries N] [--postgres-url URL]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tessera")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def timed(fn, runs=5):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=20000)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tessera"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tessera-audit-bench-")
    config = os.path.join(work, "tessera.toml")
    with open(config, "w") as f:
        f.write("rate_limit_per_client = 0\nrate_limit_per_address = 0\n")
    env = dict(os.environ, TESSERA_DATA_DIR=os.path.join(work, "data"), TESSERA_KEYS_DIR=os.path.join(work, "keys"),
               TESSERA_CONFIG=config, RUST_LOG="warn")

    def cli(*argv, stdin=None):
        return subprocess.run([BIN, *argv], env=env, input=stdin, capture_output=True, text=True, check=True).stdout

    admin = json.loads(cli("app", "create", "--name", "bench admin", "--admin", "--json"))
    cli("user", "create", "--username", "target", "--password-stdin", stdin="a long bench password\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        form = f"grant_type=client_credentials&scope=tessera:admin&client_id={admin['client_id']}" \
               f"&client_secret={admin['client_secret']}".encode()
        with urllib.request.urlopen(urllib.request.Request(base + "/o/token/", data=form)) as response:
            token = json.loads(response.read())["access_token"]
        user = call("GET", base + "/api/v1/users?limit=200", token)["items"]
        user_id = next(u["user_id"] for u in user if u["username"] == "target")

        threads, per_thread = 8, args.entries // 8
        def writer(n):
            for i in range(per_thread):
                call("PATCH", f"{base}/api/v1/users/{user_id}", token, {"name": f"name {n} {i}"})
        start = time.perf_counter()
        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        written = threads * per_thread
        print(f"audited changes: {written} in {elapsed:.1f} s = {written / elapsed:.0f}/s (8 threads, admin API PATCH)")

        audit = base + "/api/v1/audit"
        ms, first = timed(lambda: call("GET", audit + "?limit=200", token))
        print(f"newest page of 200: {ms:.1f} ms")
        cursor = first["next_cursor"]
        for _ in range(written // 400):
            page = call("GET", f"{audit}?limit=200&cursor={cursor}", token)
            cursor = page.get("next_cursor") or cursor
        ms, _ = timed(lambda: call("GET", f"{audit}?limit=200&cursor={cursor}", token))
        print(f"a page of 200 halfway down (cursor): {ms:.1f} ms")
        ms, _ = timed(lambda: call("GET", f"{audit}?limit=200&action=user.update", token))
        print(f"filtered (action=user.update, matches most): {ms:.1f} ms")
        ms, page = timed(lambda: call("GET", f"{audit}?limit=200&action=client.delete", token))
        print(f"filtered, matching nothing (a scan of all {written}): {ms:.1f} ms, {len(page['items'])} found")
    finally:
        server.terminate()
        server.wait()
    start = time.perf_counter()
    out = cli("audit", "list", "--limit", "200")
    print(f"tessera audit list --limit 200: {(time.perf_counter() - start) * 1000:.0f} ms, {len(out.splitlines())} lines")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(work, "data")) for f in fs)
    print(f"data folder after {written} entries: {size / 1e6:.1f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
