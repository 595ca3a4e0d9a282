"""Schemathesis hooks for tests/schemathesis.sh: a fresh admin token whenever the fuzzer
itself made the old one useless, and the admin client kept out of the fuzzer's reach.

With these, every operation can be fuzzed, including the ones that cut the fuzzer off from the
API: key changes (retiring the key that signed its token) and client deletion, replacement and
secret rotation (of its own admin client, whose id the stateful phase learns from listClients).
"""
import base64
import json
import os
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["TESSERA_FUZZ_BASE"]
ADMIN = json.loads(os.environ["TESSERA_FUZZ_ADMIN"])
# A well-formed id of no client: operations aimed at the admin client go here instead (404).
STAND_IN = "fuzz-stand-in-for-the-admin-client"
BASIC = base64.b64encode(f"{ADMIN['client_id']}:{ADMIN['client_secret']}".encode()).decode()
# Endpoints where a client authenticates itself (HTTP Basic) rather than presenting a token:
# with the admin client's credentials the fuzzer gets past authentication into the grants.
CLIENT_AUTHENTICATED = {"/o/token/", "/o/device_authorization/", "/o/par/", "/o/introspect/", "/o/revoke_token/"}


@schemathesis.auth(refresh_interval=30, retry_on=[401])
class AdminToken:
    """A client_credentials token with the tessera:admin scope, fetched again on a 401."""

    def get(self, case, ctx):
        request = urllib.request.Request(f"{BASE}/o/token/", data=b"grant_type=client_credentials&scope=tessera%3Aadmin",
                                         headers={"Authorization": f"Basic {BASIC}"})
        try:
            with urllib.request.urlopen(request) as response:
                return json.load(response)["access_token"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"the admin token request failed: {e.code} {e.read()!r}") from e

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        if case.operation.path in CLIENT_AUTHENTICATED:
            case.headers["Authorization"] = f"Basic {BASIC}"
        else:
            case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # Right before sending, so that ids the stateful phase links from listClients are caught too.
    if case.path_parameters and case.path_parameters.get("client_id") == ADMIN["client_id"]:
        case.path_parameters["client_id"] = STAND_IN
