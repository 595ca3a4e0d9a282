"""A short program on the Python SDK that openapi-python-client generates, unedited, from
openapi/openapi.json: obtain an admin token, create a client, use it for client_credentials,
introspect its token, list clients, delete it.

Usage: sdk_demo.py BASE_URL ADMIN_CLIENT_ID ADMIN_CLIENT_SECRET   (the generated package,
`tessera_client`, must be importable). Prints a JSON report; exits non-zero on any failure.
"""
import base64
import json
import sys

from tessera_client import AuthenticatedClient
from tessera_client.api.admin import create_client, delete_client, get_client, list_clients
from tessera_client.api.o_auth_2_0 import introspect_token, token
from tessera_client.models import (ClientKind, ClientPage, ClientSettings, ClientWithSecret, GrantKind,
                                   IntrospectionBody, Problem, TokenBody, TokenForm, TokenHintForm)

base_url, admin_id, admin_secret = sys.argv[1:4]


def basic(client_id, secret):
    """Client authentication with HTTP Basic (the clientSecretBasic scheme)."""
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return AuthenticatedClient(base_url=base_url, token=credentials, prefix="Basic")


def expect(value, kind):
    assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r}"
    return value


report = {}

# 1. An admin token, from client_credentials with the tessera:admin scope.
admin_token = expect(token.sync(client=basic(admin_id, admin_secret),
                                body=TokenForm(grant_type="client_credentials", scope="tessera:admin")), TokenBody)
admin = AuthenticatedClient(base_url=base_url, token=admin_token.access_token)

# 2. Create a client through the admin API.
created = expect(create_client.sync(client=admin, body=ClientSettings(
    name="SDK app (Python)", client_type=ClientKind.CONFIDENTIAL,
    grant_types=[GrantKind.CLIENT_CREDENTIALS], scope="read")), ClientWithSecret)
client_id, secret = created.client.client_id, created.client_secret
report["created"] = client_id

# 3. The new client gets a token, 4. and introspects it.
issued = expect(token.sync(client=basic(client_id, secret),
                           body=TokenForm(grant_type="client_credentials", scope="read")), TokenBody)
report["scope"] = issued.scope
state = expect(introspect_token.sync(client=basic(client_id, secret), body=TokenHintForm(token=issued.access_token)),
               IntrospectionBody)
report["active"] = state.active
report["introspected_client_id"] = state.client_id

# 5. List clients (paging through), 6. delete it, and see it gone.
ids, cursor = [], None
while True:
    page = expect(list_clients.sync(client=admin, limit=2, cursor=cursor), ClientPage)
    ids += [c.client_id for c in page.items]
    cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
    if cursor is None:
        break
report["listed"] = client_id in ids
report["deleted"] = delete_client.sync(client=admin, client_id=client_id).done
gone = expect(get_client.sync(client=admin, client_id=client_id), Problem)
report["after_delete"] = gone.code

print(json.dumps(report))
