"""A third-party OAuth client library (Authlib) performs a token exchange (RFC 8693) at Tessera.

Usage: authlib_token_exchange.py BASE_URL CLIENT_ID CLIENT_SECRET SUBJECT_TOKEN AUDIENCE
Finds the token endpoint in the RFC 8414 metadata (which must list the grant type), then lets
Authlib's OAuth2Session send the exchange with client_secret_basic and parse the response.
Prints the token as JSON; exits non-zero on any failure (an error response raises).
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"

base, client_id, client_secret, subject_token, audience = sys.argv[1:6]
metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
assert GRANT in metadata["grant_types_supported"], metadata["grant_types_supported"]

client = OAuth2Session(client_id, client_secret, token_endpoint_auth_method="client_secret_basic")
token = client.fetch_token(
    metadata["token_endpoint"],
    grant_type=GRANT,
    subject_token=subject_token,
    subject_token_type=ACCESS_TOKEN,
    audience=audience,
    scope="read",
)
print(json.dumps(dict(token)))
