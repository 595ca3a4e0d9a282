"""A third-party OAuth client library (Authlib) completes the code + PKCE flow against Tessera.

Usage: authlib_code_flow.py BASE_URL CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD
Authlib builds the authorization URL (S256 PKCE, state), a plain HTTP session plays the
browser (login form, consent form, CSRF tokens), and Authlib parses the callback, exchanges
the code and refreshes the token. Prints the token responses, the code and the session cookie
as JSON; exits non-zero on
any failure.
"""
import json
import re
import sys
import urllib.parse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

base, client_id, client_secret, redirect_uri, username, password = sys.argv[1:7]
metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()

client = OAuth2Session(client_id, client_secret, scope="read write", redirect_uri=redirect_uri,
                       code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic")
verifier = generate_token(48)
authorize_url, state = client.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier)

browser = requests.Session()


def csrf(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def absolute(location):
    return urllib.parse.urljoin(base, location)


# Not logged in: the authorization endpoint sends us to the login page.
first = browser.get(authorize_url, allow_redirects=False)
assert first.status_code == 302, first.status_code
login_page = browser.get(absolute(first.headers["Location"]))
next_path = re.search(r'name="next" value="([^"]*)"', login_page.text).group(1).replace("&amp;", "&").replace("&#x2f;", "/")
login = browser.post(f"{base}/o/login/", data={"csrf_token": csrf(login_page.text), "username": username,
                                               "password": password, "next": next_path}, allow_redirects=False)
assert login.status_code == 303, login.status_code

# Consent, then the redirect back to the app.
consent = browser.get(authorize_url, allow_redirects=False)
assert consent.status_code == 200, consent.status_code
decision = browser.post(authorize_url, data={"csrf_token": csrf(consent.text), "decision": "allow"}, allow_redirects=False)
assert decision.status_code == 303, decision.status_code
callback = decision.headers["Location"]
assert callback.startswith(redirect_uri), callback

token = client.fetch_token(metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier, state=state)
assert token["token_type"] == "Bearer" and token["access_token"] and token["refresh_token"], token
refreshed = client.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
assert refreshed["refresh_token"] != token["refresh_token"], "refresh tokens rotate"
code = urllib.parse.parse_qs(urllib.parse.urlparse(callback).query)["code"][0]
print(json.dumps({"first": token, "refreshed": refreshed, "code": code, "session": browser.cookies.get("tessera_session")}))
