-- Version 11: what the purge and the key schedule look up, by index (issue 29); before, both
-- read every client. The expressions are those of the queries in `store.rs`.
CREATE INDEX clients_by_access_ttl ON clients (((record ->> 'access_token_ttl')::bigint))
    WHERE record ->> 'access_token_ttl' IS NOT NULL;
CREATE INDEX clients_unused_registrations ON clients (((record ->> 'created_at')::bigint), client_id)
    WHERE record ->> 'registration_token_hash' IS NOT NULL AND record ->> 'first_used_at' IS NULL;
