#!/usr/bin/env python3
"""What the data's size costs (issue 29; a benchmark, not a test: it asserts nothing).

For each backend and size, fills a fresh store with examples/fill.rs (records written through
the store contract, the server's own calls, without HTTP: the fastest honest path; see its
header), then starts the release server on it and measures:
  - start-up: from spawn to /readyz answering, and the RSS right after;
  - client_credentials, refresh_token and introspection with wrk (req/s, p50, p99);
  - the listings and pages a probe found slow, each the median of 5 (ms): grant listings by
    the heavy user, the heavy client and a client with one grant; audit filters matching
    nothing and matching one action; the console's client and user pages of the heavy ones, a
    search matching nothing, the overview; and /metrics, the first after the start and again;
  - `tessera purge` (one pass, nothing expired) and `tessera backup` of the running server
    (sled), and the store's size: bytes per grant (with
    its refresh token, the clients and users included) and per audit entry, as filled.
Sizes are fractions of 10^6 grants (each with a refresh token), 10^5 users, 5*10^4 clients and
10^6 audit entries: 1 %, 10 % and 100 % by default.

Usage: python3 benches/scale.py [--backend sled|postgres|both] [--sizes 0.01,0.1,1]
                                [--duration SECONDS]
"""
import argparse
import base64
import http.cookiejar
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the load benchmark's helpers: wrk, scripts, PostgreSQL, CPU and RSS)

ROOT = bench.ROOT
BIN = bench.BIN
FILL = os.path.join(ROOT, "target", "release", "examples", "fill")
FULL = {"clients": 50_000, "users": 100_000, "grants": 1_000_000, "audit": 1_000_000}


def timed_ms(fetch, times=5):
    """The median of `times` calls of `fetch`, in ms, and the last answer."""
    took, answer = [], None
    for _ in range(times):
        start = time.perf_counter()
        answer = fetch()
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), answer


def get(url, headers=None, opener=None):
    request = urllib.request.Request(url, headers=headers or {})
    with (opener or urllib.request.build_opener()).open(request, timeout=120) as response:
        return response.read().decode()


def operator_session(base, username, password):
    """A cookie jar opener logged in as an operator, for the console's pages."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), bench.NoRedirect())
    page = opener.open(base + "/o/login/").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf_token": token, "username": username, "password": password, "next": ""})
    try:
        opener.open(base + "/o/login/", form.encode())
    except urllib.error.HTTPError as e:
        assert e.code == 303, f"the operator's login failed: {e.code}"
    return opener


def folder_bytes(path):
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


def run_size(backend, fraction, args, work):
    shape = {k: max(3, int(v * fraction)) for k, v in FULL.items()}
    env = dict(os.environ, TESSERA_DATA_DIR=os.path.join(work, "data"), TESSERA_KEYS_DIR=os.path.join(work, "keys"),
               TESSERA_CONFIG=os.path.join(work, "tessera.toml"), RUST_LOG="warn")
    with open(env["TESSERA_CONFIG"], "w") as f:
        # The bench operator signs in with a password alone (operators need a second factor by default).
        f.write("rate_limit_per_client = 0\nrate_limit_per_address = 0\noperator_mfa = \"optional\"\n")
    stop_postgres, target = None, ["--data", env["TESSERA_DATA_DIR"]]
    if backend == "postgres":
        stop_postgres, url, _ = bench.start_postgres(work)
        kek = subprocess.run([BIN, "keys", "new-encryption-key"], capture_output=True, text=True, check=True).stdout.strip()
        env.update(TESSERA_DATABASE_URL=url, TESSERA_KEY_ENCRYPTION_KEY=kek)
        target = ["--database-url", url]
    result = {"backend": backend, "size": f"{fraction:g}", "grants": shape["grants"]}
    server = None
    try:
        def store_bytes():
            if backend == "sled":
                return folder_bytes(env["TESSERA_DATA_DIR"])
            size = subprocess.run(["psql", env["TESSERA_DATABASE_URL"], "-tAc", "SELECT pg_database_size(current_database())"],
                                  capture_output=True, text=True)
            return int(size.stdout.strip()) if size.returncode == 0 else float("nan")
        shape_args = [x for k in ("clients", "users", "grants", "audit") for x in (f"--{k}", str(shape[k]))]
        start = time.perf_counter()
        empty = store_bytes() if backend == "postgres" else 0
        for kinds in (["clients", "users", "grants"], ["audit"]):
            for kind in kinds:
                subprocess.run([FILL, *target, *shape_args, "--only", kind], check=True, stdout=subprocess.DEVNULL)
            if kinds == ["audit"]:
                result["bytes_per_audit_entry"] = (store_bytes() - filled) / shape["audit"]
            else:
                filled = store_bytes()
                result["bytes_per_grant"] = (filled - empty) / shape["grants"]
        result["fill_s"] = time.perf_counter() - start

        def cli(*argv, stdin=None):
            return subprocess.run([BIN, *argv], env=env, input=stdin, capture_output=True, text=True, check=True).stdout
        client = json.loads(cli("app", "create", "--name", "scale bench", "--client-type", "confidential",
                                "--grant-type", "client-credentials", "--grant-type", "authorization-code",
                                "--grant-type", "refresh-token", "--redirect-uri", "http://127.0.0.1/cb",
                                "--scope", "read", "--json"))
        admin = json.loads(cli("app", "create", "--name", "scale admin", "--admin", "--json"))
        cli("user", "create", "--username", "bench", "--operator", "--password-stdin", stdin="bench password\n")
        basic = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()

        port = bench.free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(os.path.join(work, "server.log"), "w")
        start = time.perf_counter()
        server = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log)
        while True:
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - start > 600:
                    sys.exit(f"the server did not come up: see {log.name}")
                time.sleep(0.01)
        result["startup_s"] = time.perf_counter() - start
        result["rss_after_start_mib"] = bench.rss_mib(server.pid, "VmRSS")
        # The token endpoints first: the counts /metrics and the overview start run in the
        # background afterwards, and would share the machine with wrk.
        cc = bench.post_lua(work, "client_credentials", "grant_type=client_credentials&scope=read", basic)
        result["client_credentials"] = bench.run_wrk(base + "/o/token/", cc, args)
        access = json.loads(urllib.request.urlopen(urllib.request.Request(
            base + "/o/token/", data=b"grant_type=client_credentials&scope=read", headers={"Authorization": basic})).read())
        introspect = bench.post_lua(work, "introspection", f"token={access['access_token']}", basic)
        result["introspection"] = bench.run_wrk(base + "/o/introspect/", introspect, args)
        per_thread = 2 * args.connections // args.threads
        responses = bench.refresh_tokens(base, client["client_id"], client["client_secret"], "bench", "bench password",
                                         per_thread * args.threads * 2)
        chains = bench.refresh_lua(work, "refresh", [r["refresh_token"] for r in responses], basic, args.threads)
        result["refresh_token"] = bench.run_wrk(base + "/o/token/", chains, args, warmup=False)
        counting = time.perf_counter()
        result["metrics_first_ms"], _ = timed_ms(lambda: get(base + "/metrics"), times=1)
        result["metrics_ms"], _ = timed_ms(lambda: get(base + "/metrics"))

        form = f"grant_type=client_credentials&scope=tessera:admin&client_id={admin['client_id']}" \
               f"&client_secret={admin['client_secret']}".encode()
        token = json.loads(urllib.request.urlopen(urllib.request.Request(base + "/o/token/", data=form)).read())["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        api = base + "/api/v1"
        listings = {
            "grants of the heavy user": f"{api}/grants?user_id=u-heavy&limit=100",
            "grants of the heavy client": f"{api}/grants?client_id=c-heavy&limit=100",
            "grants of a client with one": f"{api}/grants?client_id=c-000001&limit=100",
            "audit, actor matching nothing": f"{api}/audit?actor=nobody&limit=100",
            "audit, one action": f"{api}/audit?action=user.delete&limit=100",
            "audit, target of few": f"{api}/audit?target=u-000002&limit=100",
        }
        for name, url in listings.items():
            result[name], _ = timed_ms(lambda: get(url, bearer))
        console = operator_session(base, "bench", "bench password")
        pages = {
            "console: heavy client's page": "/admin/clients/c-heavy",
            "console: heavy user's page": "/admin/users/u-heavy",
            "console: client search matching nothing": "/admin/clients?q=no-such-app",
            "console: user search matching nothing": "/admin/users?q=no-such-user",
            "console: audit, actor matching nothing": "/admin/audit?actor=nobody",
            "console: overview": "/admin/",
        }
        for name, path in pages.items():
            result[name], _ = timed_ms(lambda: get(base + path, opener=console))
        # How long until the active refresh tokens were counted (-1 before), from the first scrape.
        while re.search(r"^tessera_active_refresh_tokens -1$", get(base + "/metrics"), re.M):
            time.sleep(0.1)
        result["refresh_tokens_counted_after_s"] = time.perf_counter() - counting

        # One purge pass with nothing expired (issue 29: a pass costs what expired, not what is
        # stored): the median of 3, as the command reports it (without its own start-up).
        passes = [int(re.search(r" in (\d+) ms", cli("purge")).group(1)) for _ in range(3)]
        result["purge_ms"] = statistics.median(passes)
        if backend == "sled":
            start = time.perf_counter()
            cli("backup", "--to", os.path.join(work, "backup"))
            result["backup_s"] = time.perf_counter() - start
        result["peak_rss_mib"] = bench.rss_mib(server.pid)
    finally:
        if server:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if stop_postgres:
            stop_postgres()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sled", "postgres", "both"], default="both")
    parser.add_argument("--sizes", default="0.01,0.1,1")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    bench.ensure_wrk()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tessera", "--example", "fill"], cwd=ROOT, check=True)
    backends = ["sled", "postgres"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        for fraction in map(float, args.sizes.split(",")):
            work = tempfile.mkdtemp(prefix="tessera-scale-")
            try:
                # As in bench.py's cluster runs: PostgreSQL's backends are not starved of a core.
                with bench.one_scheduling_group():
                    results.append(run_size(backend, fraction, args, work))
            finally:
                if not os.environ.get("BENCH_KEEP"):
                    shutil.rmtree(work, ignore_errors=True)
            print(json.dumps(results[-1]), flush=True)

    print(f"\nTessera at scale: wrk -t{args.threads} -c{args.connections}, {args.duration}s a run; "
          f"listings and pages: median of 5, ms\n")
    names = [k for k in results[0] if k not in ("backend", "size")]
    header = "".join(f"{r['backend'][:5]} {r['size']:>5}".rjust(14) for r in results)
    print(f"{'':<42}{header}")
    for name in names:
        cells = []
        for r in results:
            value = r.get(name)
            if isinstance(value, dict):
                cells.append(f"{value['rps']:>7.0f}/{value['p99_ms']:<5.1f}")
            elif isinstance(value, float):
                cells.append(f"{value:>13.2f}" if value < 10 else f"{value:>13.1f}")
            else:
                cells.append(f"{value if value is not None else '-':>13}")
        label = name + (" (req/s / p99 ms)" if isinstance(results[0].get(name), dict) else "")
        print(f"{label:<42}" + "".join(c.rjust(14) for c in cells))


if __name__ == "__main__":
    main()
