"""An independent TOTP implementation (PyPI pyotp) against Tessera's second factor.

Usage: pyotp_second_factor.py BASE_URL USERNAME PASSWORD
A plain HTTP session plays the browser: it logs in with the password, adds an authenticator
app on /o/security/ from the secret the page shows (pyotp makes its codes), makes recovery
codes, then logs in again in a fresh session with the app's next code. It also tries the same
code twice and a recovery code twice. Prints what each answer was as JSON; exits non-zero on
any surprise.
"""
import html
import json
import re
import sys
import time

import pyotp
import requests

base, username, password = sys.argv[1:4]


def csrf(page):
    return html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page).group(1))


def log_in(browser):
    page = browser.get(f"{base}/o/login/").text
    answer = browser.post(
        f"{base}/o/login/",
        data={"csrf_token": csrf(page), "username": username, "password": password, "next": ""},
        allow_redirects=False,
    )
    assert answer.status_code == 303, answer.status_code
    return answer.headers["location"]


def security(browser, **fields):
    page = browser.get(f"{base}/o/security/").text
    return browser.post(f"{base}/o/security/", data={"csrf_token": csrf(page), **fields}, allow_redirects=False)


owner = requests.Session()
assert log_in(owner) == "/", "no factor yet: the password alone signs in"
started = security(owner, action="start_totp")
secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', started.text).group(1)
app = pyotp.TOTP(secret)  # SHA-1, 6 digits, 30 s: what every authenticator app uses
enrolment_step = int(time.time()) // 30
confirmed = security(owner, action="confirm_totp", code=app.at(enrolment_step * 30))
assert "Your authenticator app is on" in confirmed.text, confirmed.text
codes = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", security(owner, action="recovery_codes").text)
assert len(codes) == 10, codes


def second_step(browser):
    factor = log_in(browser)
    assert factor.startswith("/o/login/factor/"), factor
    page = browser.get(f"{base}{factor}").text
    return csrf(page)


def submit(browser, token, code):
    return browser.post(
        f"{base}/o/login/factor/", data={"csrf_token": token, "code": code, "next": ""}, allow_redirects=False
    ).status_code


report = {}
browser = requests.Session()
token = second_step(browser)
# The enrolment's code is spent; the next step's is accepted (one step of drift), once.
report["replayed_enrolment_code"] = submit(browser, token, app.at(enrolment_step * 30))
next_code = app.at((enrolment_step + 1) * 30)
report["next_code"] = submit(browser, token, next_code)
report["signed_in_page"] = browser.get(f"{base}/o/security/", allow_redirects=False).status_code

again = requests.Session()
token = second_step(again)
report["same_code_again"] = submit(again, token, next_code)
report["recovery_code"] = submit(again, token, codes[0])

third = requests.Session()
token = second_step(third)
report["recovery_code_again"] = submit(third, token, codes[0])
print(json.dumps(report))
