#!/usr/bin/env python3
"""Sign-in latency and server CPU: a password login, and a password login followed by an
authenticator app's code (TOTP).

Runs the release server on loopback on a fresh data folder and signs people in through the
pages, as browsers do (the login form's GET, its POST; then the second step's GET and POST),
a few at a time. A "sign-in" is timed from the login form's POST to the answer that sets the
session cookie. Each TOTP user signs in once with their app's next code (a code is accepted
once), so that scenario has one user per sign-in, enrolled first through /o/security/. The
codes are made here (RFC 6238 on hmac/hashlib).

Usage: python3 benches/signin.py [--signins N] [--parallel N]
Prints, per scenario: sign-ins, median and p99 latency (ms), and server CPU per sign-in (ms).
Needs only Python's standard library and cargo (it builds the release binary).
"""
import argparse
import hashlib
import hmac
import http.cookiejar
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tessera")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "a bench password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """A cookie jar that never follows redirects."""

    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect())

    def call(self, path, fields=None):
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        try:
            with self.opener.open(urllib.request.Request(self.base + path, data=data)) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()


def csrf(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def base32_decode(text):
    import base64
    return base64.b32decode(text + "=" * (-len(text) % 8))


def totp(secret, step):
    mac = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[19] & 0xF
    return "%06d" % ((struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def password_step(browser, username):
    """The login form and its POST; returns (the POST's start time, its answer)."""
    _, _, page = browser.call("/o/login/")
    started = time.perf_counter()
    status, headers, _ = browser.call("/o/login/", {"csrf_token": csrf(page), "username": username,
                                                    "password": PASSWORD, "next": ""})
    assert status == 303, f"login of {username}: {status}"
    return started, headers["Location"]


def enrol(base, username):
    """Signs `username` in and adds an authenticator app; returns its secret and the step used."""
    browser = Browser(base)
    password_step(browser, username)
    _, _, page = browser.call("/o/security/")
    _, _, page = browser.call("/o/security/", {"csrf_token": csrf(page), "action": "start_totp"})
    secret = base32_decode(re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1))
    step = int(time.time()) // 30
    _, _, done = browser.call("/o/security/", {"csrf_token": csrf(page), "action": "confirm_totp",
                                               "code": totp(secret, step)})
    assert "authenticator app is on" in done, done[:500]
    return secret, step


def run(parallel, jobs):
    """Runs the callables in `jobs`, `parallel` at once; returns their results (latencies)."""
    results, lock, queue = [], threading.Lock(), list(jobs)

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            latency = job()
            with lock:
                results.append(latency)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def report(name, latencies, cpu):
    latencies = sorted(latencies)
    median = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{name:<26} {len(latencies):>8} {median * 1000:>10.1f} {p99 * 1000:>10.1f} {cpu / len(latencies) * 1000:>12.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signins", type=int, default=120, help="sign-ins per scenario")
    parser.add_argument("--parallel", type=int, default=4, help="sign-ins at once")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tessera"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tessera-signin-")
    config = os.path.join(work, "tessera.toml")
    with open(config, "w") as f:
        # One address signs everyone in: the per-address limits would be what is measured.
        f.write("rate_limit_per_client = 0\nrate_limit_per_address = 0\nself_service_changes_per_minute = 0\n"
                "login_max_failures_per_address = 100000\n")
    env = dict(os.environ, TESSERA_DATA_DIR=os.path.join(work, "data"), TESSERA_KEYS_DIR=os.path.join(work, "keys"),
               TESSERA_CONFIG=config, RUST_LOG="warn")
    users = [f"person{i}" for i in range(args.signins)] + ["plain"]
    for username in users:
        subprocess.run([BIN, "user", "create", "--username", username, "--password-stdin"], env=env,
                       input=PASSWORD + "\n", capture_output=True, text=True, check=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        print(f"Tessera sign-in benchmark: {args.signins} sign-ins per scenario, {args.parallel} at once, "
              f"{os.cpu_count()} cores shared with this script")
        print(f"{'scenario':<26} {'sign-ins':>8} {'p50 ms':>10} {'p99 ms':>10} {'CPU ms/each':>12}")

        def password_login():
            started, location = password_step(Browser(base), "plain")
            assert location == "/", location
            return time.perf_counter() - started

        run(args.parallel, [password_login] * 8)  # warm-up
        before = cpu_seconds(server.pid)
        latencies = run(args.parallel, [password_login] * args.signins)
        report("password", latencies, cpu_seconds(server.pid) - before)

        apps = {username: enrol(base, username) for username in users[:-1]}

        def with_code(username):
            def login():
                browser = Browser(base)
                started, location = password_step(browser, username)
                assert location.startswith("/o/login/factor/"), location
                _, _, page = browser.call(location)
                secret, used = apps[username]
                step = max(used + 1, int(time.time()) // 30)
                status, headers, _ = browser.call("/o/login/factor/", {"csrf_token": csrf(page), "next": "",
                                                                       "code": totp(secret, step)})
                assert status == 303 and headers["Location"] == "/", status
                return time.perf_counter() - started
            return login

        before = cpu_seconds(server.pid)
        latencies = run(args.parallel, [with_code(u) for u in users[:-1]])
        report("password + TOTP", latencies, cpu_seconds(server.pid) - before)
        print("passkey                    (not built yet)")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
