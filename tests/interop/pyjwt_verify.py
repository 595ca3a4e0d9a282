"""Verify a Tessera access token with PyJWT against the live JWKS.

Usage: pyjwt_verify.py JWKS_URL ISSUER AUDIENCE TOKEN
Prints the claims as JSON and exits 0 when the token verifies; exits 1 otherwise.
"""
import json
import sys

import jwt

jwks_url, issuer, audience, token = sys.argv[1:5]
try:
    signing_key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256", "RS256", "EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
except jwt.PyJWTError as err:
    print(f"rejected: {type(err).__name__}: {err}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(claims))
