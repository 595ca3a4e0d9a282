-- Version 2: device authorizations (RFC 8628), under the hash of the device code, with the
-- hash of the user code unique (the verification page finds a request by it).

CREATE TABLE device_authorizations (
    device_code_hash bytea PRIMARY KEY,
    user_code_hash   bytea NOT NULL UNIQUE,
    expires_at       bigint NOT NULL,
    record           jsonb NOT NULL
);
CREATE INDEX device_authorizations_by_expiry ON device_authorizations (expires_at);
