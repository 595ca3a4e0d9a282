#!/usr/bin/env python3
"""Flood benchmark (it measures, it asserts nothing): legitimate traffic during a flood.

The release server runs with its default configuration (rate limits on). A legitimate client
on its own address (127.0.0.2) sends a steady, paced stream of requests (client_credentials
grants and UserInfo calls with a valid token) and records each latency: first alone, then while
wrk floods the server from 127.0.0.1 with
  - bearer JWTs naming an unknown `kid` at UserInfo,
  - garbage tokens at introspection and at the token endpoint (refresh_token),
  - 100 KB garbage bearer tokens, and 200 KB headers, and headers past the server's limit.
The same is then done to crates/tessera-resource/examples/resource_server.rs: a flood of tokens
with made-up `kid`s beside legitimate verified GETs, counting the JWKS fetches the flood caused at
Tessera.

Reports, for each phase: the legitimate requests' p50/p99/max and failures, the flood's rate,
and the server's resident memory (start, peak, end) sampled every 0.2 s.

Usage: python3 benches/flood.py [--duration SECONDS] [--connections N] [--rate PER_SECOND]
"""
import argparse
import base64
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BIN, RESOURCE_SERVER, ROOT, DONE_LUA, ensure_wrk, free_port, rss_mib, wait_until_up  # noqa: E402

LEGIT_ADDRESS = "127.0.0.2"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(kid):
    """A well-formed ES256 access token for a key nobody has."""
    header = b64(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": kid}).encode())
    claims = b64(json.dumps({"iss": "x", "sub": "x", "aud": "x", "exp": 4102444800, "scope": "read"}).encode())
    return f"{header}.{claims}.{b64(secrets.token_bytes(64))}"


class Legit:
    """Paced requests from LEGIT_ADDRESS on keep-alive connections, one thread per request kind."""

    def __init__(self, port, requests, rate):
        self.port, self.requests, self.interval = port, requests, len(requests) / rate
        self.latencies, self.failures, self.stop = [], [], threading.Event()

    def run_one(self, method, path, headers, body):
        conn = None
        next_at = time.monotonic()
        while not self.stop.is_set():
            next_at += self.interval
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(LEGIT_ADDRESS, 0))
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(response.status)
            except OSError as e:
                self.failures.append(repr(e))
                conn = None
            self.latencies.append(time.monotonic() - start)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self):
        self.threads = [threading.Thread(target=self.run_one, args=r) for r in self.requests]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def summary(self):
        ordered = sorted(self.latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
        return {"requests": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": ordered[-1] * 1000,
                "failures": len(self.failures), "failure_kinds": sorted(set(map(str, self.failures)))[:3]}


class Memory:
    """Samples a process's resident set every 0.2 s."""

    def __init__(self, pid):
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def __enter__(self):
        def sample():
            while not self.stop.wait(0.2):
                self.samples.append(rss_mib(self.pid, "VmRSS"))
        self.thread = threading.Thread(target=sample)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def summary(self):
        half = len(self.samples) // 2
        return {"start": self.samples[0], "peak": max(self.samples), "end": self.samples[-1],
                "peak_first_half": max(self.samples[:half] or [0]), "peak_second_half": max(self.samples[half:] or [0])}


def flood_script(path, requests):
    """A wrk script cycling through `requests` (method, path, headers, body)."""
    entries = []
    for method, target, headers, body in requests:
        hdrs = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        entries.append(f"wrk.format({json.dumps(method)}, {json.dumps(target)}, {{ {hdrs} }}, {json.dumps(body) if body else 'nil'})")
    with open(path, "w") as f:
        f.write("local requests = {}\ninit = function(args)\n")
        for e in entries:
            f.write(f"  table.insert(requests, {e})\n")
        f.write("end\nlocal i = 0\nrequest = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n")
        f.write(DONE_LUA)


def run_flood(url, script, args):
    out = subprocess.run(["wrk", "-t", "1", "-c", str(args.connections), "-d", f"{args.duration}s", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    requests, micros, _, _, bad_status, socket_errors = map(int, line.split()[1:])
    return {"requests": requests, "rps": requests / (micros / 1e6), "non_2xx": bad_status, "socket_errors": socket_errors}


def phase(name, port, pid, legit_requests, flood, args):
    with Memory(pid) as memory, Legit(port, legit_requests, args.rate) as legit:
        if flood:
            flood_result = flood()
        else:
            time.sleep(args.duration)
            flood_result = None
    return {"phase": name, "legit": legit.summary(), "flood": flood_result, "rss_mib": memory.summary()}


def jwks_fetches(base):
    metrics = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    return sum(int(float(m)) for m in re.findall(r'tessera_http_requests_total\{route="/.well-known/jwks.json"[^}]*\} (\S+)', text))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=200, help="legitimate requests per second")
    args = parser.parse_args()

    ensure_wrk()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tessera", "--example", "resource_server"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tessera-flood-")
    env = dict(os.environ, TESSERA_DATA_DIR=os.path.join(work, "data"), TESSERA_KEYS_DIR=os.path.join(work, "keys"))
    env.pop("TESSERA_CONFIG", None)
    env.pop("RUST_LOG", None)

    def cli(*argv):
        return subprocess.run([BIN, *argv], env=env, capture_output=True, text=True, check=True).stdout

    legit_client = json.loads(cli("app", "create", "--name", "legit", "--client-type", "confidential", "--grant-type",
                                  "client-credentials", "--scope", "read", "--json"))
    attacker = json.loads(cli("app", "create", "--name", "attacker", "--client-type", "confidential", "--grant-type",
                              "client-credentials", "--grant-type", "refresh-token", "--grant-type", "authorization-code",
                              "--redirect-uri", "http://127.0.0.1/cb", "--scope", "read", "--json"))
    basic = lambda c: "Basic " + base64.b64encode(f"{c['client_id']}:{c['client_secret']}".encode()).decode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log)
    results = []
    try:
        wait_until_up(base + "/healthz")
        conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(LEGIT_ADDRESS, 0))
        conn.request("POST", "/o/token/", "grant_type=client_credentials&scope=read", {**form, "Authorization": basic(legit_client)})
        access = json.loads(conn.getresponse().read())["access_token"]
        legit_requests = [
            ("POST", "/o/token/", {**form, "Authorization": basic(legit_client)}, "grant_type=client_credentials&scope=read"),
            ("POST", "/o/introspect/", {**form, "Authorization": basic(legit_client)}, f"token={access}"),
        ]
        flood_requests = [
            ("GET", "/o/userinfo/", {"Authorization": f"Bearer {fake_jwt(secrets.token_hex(16))}"}, None),
            ("GET", "/o/userinfo/", {"Authorization": f"Bearer {fake_jwt(secrets.token_hex(16))}"}, None),
            ("POST", "/o/introspect/", {**form, "Authorization": basic(attacker)}, f"token={secrets.token_urlsafe(40)}"),
            ("POST", "/o/token/", {**form, "Authorization": basic(attacker)}, f"grant_type=refresh_token&refresh_token={secrets.token_urlsafe(40)}"),
            ("GET", "/o/userinfo/", {"Authorization": "Bearer " + "A" * 100_000}, None),
            ("GET", "/healthz", {"X-Padding": "p" * 200_000}, None),
        ]
        script = os.path.join(work, "flood.lua")
        flood_script(script, flood_requests)
        results.append(phase("Tessera, no flood", port, server.pid, legit_requests, None, args))
        results.append(phase("Tessera, flood", port, server.pid, legit_requests, lambda: run_flood(base + "/", script, args), args))

        # The resource server: made-up kids make it ask Tessera for the JWKS, at most once per
        # min_refetch_interval.
        rs_port = free_port()
        rs = subprocess.Popen([RESOURCE_SERVER, "--issuer", base, "--addr", f"127.0.0.1:{rs_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(f"http://127.0.0.1:{rs_port}/.well-known/oauth-protected-resource")
            rs_legit = [("GET", "/api/posts/protected_view/", {"Authorization": f"Bearer {access}"}, None)]
            rs_script = os.path.join(work, "rs_flood.lua")
            flood_script(rs_script, [("GET", "/api/posts/", {"Authorization": f"Bearer {fake_jwt(secrets.token_hex(16))}"}, None)
                                     for _ in range(500)])
            results.append(phase("resource server, no flood", rs_port, rs.pid, rs_legit, None, args))
            before = jwks_fetches(base)
            flooded = phase("resource server, unknown-kid flood", rs_port, rs.pid, rs_legit,
                            lambda: run_flood(f"http://127.0.0.1:{rs_port}/", rs_script, args), args)
            flooded["jwks_fetches_caused"] = jwks_fetches(base) - before
            results.append(flooded)
        finally:
            rs.terminate()
            rs.wait(timeout=15)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    print(f"\nFlood benchmark: {args.duration}s per phase, legitimate traffic {args.rate} req/s from {LEGIT_ADDRESS}, "
          f"flood wrk -t1 -c{args.connections} from 127.0.0.1, {os.cpu_count()} cores shared by all\n")
    print(f"{'phase':<36}{'legit n':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'failed':>7}{'flood/s':>9}"
          f"{'RSS start':>10}{'peak':>7}{'end':>7}")
    for r in results:
        legit, rss, flood = r["legit"], r["rss_mib"], r["flood"]
        print(f"{r['phase']:<36}{legit['requests']:>8}{legit['p50_ms']:>8.2f}{legit['p99_ms']:>8.2f}{legit['max_ms']:>8.1f}"
              f"{legit['failures']:>7}{(flood['rps'] if flood else 0):>9.0f}{rss['start']:>9.1f}M{rss['peak']:>6.1f}M{rss['end']:>6.1f}M")
    for r in results:
        if r["flood"]:
            print(f"{r['phase']}: flood {r['flood']}, RSS peak first half {r['rss_mib']['peak_first_half']:.1f} MiB, "
                  f"second half {r['rss_mib']['peak_second_half']:.1f} MiB"
                  + (f", JWKS fetches caused: {r['jwks_fetches_caused']}" if "jwks_fetches_caused" in r else ""))
        if r["legit"]["failures"]:
            print(f"{r['phase']}: legitimate failures {r['legit']['failure_kinds']}")
    if os.environ.get("BENCH_KEEP"):
        print("kept", work)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
