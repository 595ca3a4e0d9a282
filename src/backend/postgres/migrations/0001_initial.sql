-- Tessera's schema, version 1: one table per record kind. Records the core reads whole are
-- JSON (jsonb); what queries select, index or change atomically is in columns.

CREATE TABLE clients (
    client_id     text PRIMARY KEY,
    owner_user_id text,
    record        jsonb NOT NULL
);
CREATE INDEX clients_by_owner ON clients (owner_user_id, client_id) WHERE owner_user_id IS NOT NULL;

CREATE TABLE users (
    user_id  text PRIMARY KEY,
    username text NOT NULL UNIQUE,
    record   jsonb NOT NULL
);

CREATE TABLE codes (
    code_hash  bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    redeemed   boolean NOT NULL DEFAULT false,
    record     jsonb NOT NULL
);

CREATE TABLE grants (
    grant_id   text PRIMARY KEY,
    client_id  text NOT NULL,
    user_id    text NOT NULL,
    scope      text NOT NULL,
    audience   text NOT NULL,
    auth_time  bigint NOT NULL,
    created_at bigint NOT NULL,
    revoked    boolean NOT NULL
);
CREATE INDEX grants_by_user ON grants (user_id, client_id);
CREATE INDEX grants_by_client ON grants (client_id);

CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    grant_id   text NOT NULL,
    issued_at  bigint NOT NULL,
    expires_at bigint NOT NULL,
    rotated    boolean NOT NULL
);
CREATE INDEX refresh_tokens_by_grant ON refresh_tokens (grant_id);

CREATE TABLE revoked_access (
    jti        text PRIMARY KEY,
    expires_at bigint NOT NULL
);

CREATE TABLE consents (
    user_id   text NOT NULL,
    client_id text NOT NULL,
    record    jsonb NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX consents_by_client ON consents (client_id);

CREATE TABLE sessions (
    id_hash    bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    record     jsonb NOT NULL
);

CREATE TABLE server_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Failure counters (the login throttle's) and sealed scratch values: short-lived state every
-- node shares.
CREATE TABLE counters (
    key             bytea PRIMARY KEY,
    failures        integer NOT NULL,
    last_failure_ms bigint NOT NULL,
    locked_until_ms bigint NOT NULL,
    expires_at_ms   bigint NOT NULL
);

CREATE TABLE scratch (
    key        bytea PRIMARY KEY,
    value      bytea NOT NULL,
    expires_at bigint NOT NULL
);

-- The keyring of a cluster: private keys encrypted (AES-256-GCM) under the key-encryption key,
-- which is never stored here. `keyring.version` changes with every change, for the nodes to poll.
CREATE TABLE keys (
    kid         text PRIMARY KEY,
    alg         text NOT NULL,
    status      text NOT NULL,
    created_at  bigint NOT NULL,
    position    bigint NOT NULL,
    private_key bytea NOT NULL
);

CREATE TABLE keyring (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO keyring (id, version) VALUES (1, 0);

-- A row the readiness check rewrites.
CREATE TABLE readiness_probe (
    id integer PRIMARY KEY CHECK (id = 1),
    at bigint NOT NULL
);
