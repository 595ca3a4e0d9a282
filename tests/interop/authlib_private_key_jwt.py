"""A third-party OAuth client library (Authlib) authenticates to Tessera with private_key_jwt.

Usage: authlib_private_key_jwt.py BASE_URL CLIENT_ID KEY_FILE ALG [KID]
KEY_FILE is the client's private key (a PKCS#8 PEM file, or a JWK as JSON); ALG is the JWS
algorithm Authlib signs with (ES256, EdDSA, RS256, PS256); KID, when given, goes in the header.

Authlib's OAuth2Session, with `PrivateKeyJWT` (authlib.oauth2.rfc7523) as the client
authentication of every endpoint and its defaults otherwise (the assertion's `aud` is the URL
of the endpoint called, its `exp` an hour after `iat`), gets a client_credentials token,
introspects it, revokes it and introspects it again. Prints a JSON report; a step the server
refuses ends the script with exit code 3 and `failed_at`, `status` and `error` in the report.
The report has the header and claims of every assertion Authlib sent (`assertions`).
"""
import base64
import json
import sys
import urllib.parse

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey, OKPKey, RSAKey

base, client_id, key_file, alg = sys.argv[1:5]
kid = sys.argv[5] if len(sys.argv) > 5 else None
metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()

with open(key_file, encoding="utf-8") as f:
    text = f.read()
key_class = {"ES256": ECKey, "EdDSA": OKPKey, "RS256": RSAKey, "PS256": RSAKey}[alg]
key = key_class.import_key(json.loads(text) if text.lstrip().startswith("{") else text)

# No token_endpoint given: Authlib puts the URL of each endpoint it calls in `aud`.
auth = PrivateKeyJWT(alg=alg, headers={"kid": kid} if kid else None)
session = OAuth2Session(client_id, key, scope="read", token_endpoint_auth_method=auth,
                        revocation_endpoint_auth_method=auth)
report = {"assertions": []}


def part(jwt, i):
    encoded = jwt.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def capture(response, *args, **kwargs):
    body = response.request.body or ""
    form = dict(urllib.parse.parse_qsl(body.decode() if isinstance(body, bytes) else body))
    if "client_assertion" in form:
        assertion = form["client_assertion"]
        report["assertions"].append({"header": part(assertion, 0), "claims": part(assertion, 1)})


session.hooks["response"].append(capture)


def refused(step, status, error, description):
    report.update(failed_at=step, status=status, error=error, error_description=description)
    print(json.dumps(report))
    sys.exit(3)


def refused_response(step, response):
    is_json = response.headers.get("content-type", "").startswith("application/json")
    body = response.json() if is_json else {}
    refused(step, response.status_code, body.get("error"), body.get("error_description"))


# fetch_token raises an error without the status: a hook keeps the response's.
statuses = []
session.register_compliance_hook("access_token_response", lambda r: statuses.append(r.status_code) or r)
try:
    token = session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
except OAuthError as e:
    refused("token", statuses[-1] if statuses else None, e.error, e.description)
report["token"] = dict(token)
access_token = token["access_token"]


def introspect():
    response = session.introspect_token(metadata["introspection_endpoint"], token=access_token)
    if response.status_code != 200:
        refused_response("introspect", response)
    return response.json()


report["introspected"] = introspect()
revoked = session.revoke_token(metadata["revocation_endpoint"], token=access_token)
if revoked.status_code != 200:
    refused_response("revoke", revoked)
report["introspected_after_revocation"] = introspect()
print(json.dumps(report))
