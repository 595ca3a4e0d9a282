#!/usr/bin/env python3
"""Sign-in latency and server CPU: a password login, a password login followed by an
authenticator app's code (TOTP), and a passkey sign-in (no username, no password).

Runs the release server on loopback on a fresh data folder and signs people in through the
pages, as browsers do (the login form's GET, its POST; then the second step's GET and POST),
a few at a time. A "sign-in" is timed from the login form's POST to the answer that sets the
session cookie. Each TOTP user signs in once with their app's next code (a code is accepted
once), so that scenario has one user per sign-in, enrolled first through /o/security/. The
codes are made here (RFC 6238 on hmac/hashlib). A passkey sign-in is timed from the POST of
the browser's answer to the session cookie; the answer comes from a software authenticator
here (ECDSA P-256 from the `cryptography` package, the attestation in a small CBOR writer),
registered once on /o/security/. The server's issuer is http://localhost:PORT (a WebAuthn
relying party needs a domain name).

Usage: python3 benches/signin.py [--signins N] [--parallel N]
Prints, per scenario: sign-ins, median and p99 latency (ms), and server CPU per sign-in (ms).
Needs Python's standard library and cargo (it builds the release binary); the passkey scenario
also needs `cryptography` (tests/run.sh installs it in target/test-venv: run the bench with
target/test-venv/bin/python, or it is skipped).
"""
import argparse
import base64
import hashlib
import json
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


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cbor(value):
    """The few CBOR items an attestation object needs (RFC 8949): maps, ints, text, bytes."""
    def head(major, length):
        if length < 24:
            return bytes([major << 5 | length])
        for extra, size in ((24, 1), (25, 2), (26, 4)):
            if length < 1 << (8 * size):
                return bytes([major << 5 | extra]) + length.to_bytes(size, "big")
        raise ValueError(length)
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        return head(3, len(value.encode())) + value.encode()
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(value)


class Authenticator:
    """A software passkey (ECDSA P-256, user verified, counter kept at 0 as synced passkeys do,
    so parallel sign-ins need no order)."""

    def __init__(self, origin):
        from cryptography.hazmat.primitives.asymmetric import ec
        self.ec = ec
        self.origin = origin
        self.rp_id = urllib.parse.urlparse(origin).hostname
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.id = os.urandom(16)
        self.user_handle = None

    def auth_data(self, flags):
        return hashlib.sha256(self.rp_id.encode()).digest() + bytes([flags]) + (0).to_bytes(4, "big")

    def client_data(self, kind, options):
        return json.dumps({"type": kind, "challenge": b64(unb64(options["challenge"])), "origin": self.origin,
                           "crossOrigin": False}).encode()

    def create(self, options):
        numbers = self.key.public_key().public_numbers()
        cose = {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        data = self.auth_data(0x01 | 0x04 | 0x40) + bytes(16) + len(self.id).to_bytes(2, "big") + self.id + cbor(cose)
        self.user_handle = unb64(options["user"]["id"])
        attestation = cbor({"fmt": "none", "attStmt": {}, "authData": data})
        return json.dumps({"id": b64(self.id), "rawId": b64(self.id), "type": "public-key",
                           "response": {"clientDataJSON": b64(self.client_data("webauthn.create", options)),
                                        "attestationObject": b64(attestation)}})

    def get(self, options):
        from cryptography.hazmat.primitives import hashes
        data = self.auth_data(0x01 | 0x04)
        client = self.client_data("webauthn.get", options)
        signature = self.key.sign(data + hashlib.sha256(client).digest(), self.ec.ECDSA(hashes.SHA256()))
        return json.dumps({"id": b64(self.id), "rawId": b64(self.id), "type": "public-key",
                           "response": {"authenticatorData": b64(data), "clientDataJSON": b64(client),
                                        "signature": b64(signature), "userHandle": b64(self.user_handle)}})


def prompt(page):
    """The passkey prompt on a page: its options and sealed ceremony."""
    import html
    options = json.loads(html.unescape(re.search(r'data-options="([^"]+)"', page).group(1)))
    return options, re.search(r'name="ceremony" value="([^"]+)"', page).group(1)


def register_passkey(base, username, authenticator):
    browser = Browser(base)
    password_step(browser, username)
    _, _, page = browser.call("/o/security/")
    _, _, page = browser.call("/o/security/", {"csrf_token": csrf(page), "action": "start_passkey", "name": "bench"})
    options, ceremony = prompt(page)
    _, _, done = browser.call("/o/security/", {"csrf_token": csrf(page), "action": "finish_passkey",
                                               "ceremony": ceremony, "credential": authenticator.create(options)})
    assert "Your passkey is added" in done, done[:500]


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
    people = [f"person{i}" for i in range(args.signins)]
    users = people + ["plain", "keyholder"]
    for username in users:
        subprocess.run([BIN, "user", "create", "--username", username, "--password-stdin"], env=env,
                       input=PASSWORD + "\n", capture_output=True, text=True, check=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env["TESSERA_ISSUER"] = f"http://localhost:{port}"
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

        apps = {username: enrol(base, username) for username in people}

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
        latencies = run(args.parallel, [with_code(u) for u in people])
        report("password + TOTP", latencies, cpu_seconds(server.pid) - before)

        try:
            authenticator = Authenticator(f"http://localhost:{port}")
        except ImportError:
            print("passkey                    (skipped: needs the cryptography package)")
            return
        register_passkey(base, "keyholder", authenticator)

        def passkey_login():
            browser = Browser(base)
            _, _, page = browser.call("/o/login/")
            options, ceremony = prompt(page)
            answer = authenticator.get(options)
            started = time.perf_counter()
            status, headers, body = browser.call("/o/login/passkey/", {"csrf_token": csrf(page), "next": "",
                                                                       "ceremony": ceremony, "credential": answer})
            assert status == 303 and headers["Location"] == "/", (status, body[:300])
            return time.perf_counter() - started

        run(args.parallel, [passkey_login] * 8)  # warm-up
        before = cpu_seconds(server.pid)
        latencies = run(args.parallel, [passkey_login] * args.signins)
        report("passkey", latencies, cpu_seconds(server.pid) - before)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
