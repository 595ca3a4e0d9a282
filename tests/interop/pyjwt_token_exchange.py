"""Verify an exchanged Tessera access token (RFC 8693) with PyJWT against the live JWKS.

Usage: pyjwt_token_exchange.py JWKS_URL ISSUER AUDIENCE TOKEN
Verifies the signature (key found by kid in the JWKS), typ at+jwt (RFC 9068 §4), iss, aud and
exp, then walks the `act` claim (RFC 8693 §4.1), outermost (current) actor first.
Prints {"claims": ..., "actors": [sub, ...]} and exits 0; exits 1 if PyJWT rejects the token
or `act` is not a chain of objects that each name a `sub`.
"""
import json
import sys

import jwt

jwks_url, issuer, audience, token = sys.argv[1:5]
try:
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("typ is not at+jwt")
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

actors = []
act = claims.get("act")
while act is not None:
    if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
        print(f"rejected: malformed act claim: {act!r}", file=sys.stderr)
        sys.exit(1)
    actors.append(act["sub"])
    act = act.get("act")
print(json.dumps({"claims": claims, "actors": actors}))
