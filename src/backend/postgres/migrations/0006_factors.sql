-- Version 6: users' second factors and passkeys, and how each grant's login was made.
-- A factor is read whole (JSON); its revision is a column for compare-and-swap.
CREATE TABLE factors (
    user_id   text NOT NULL,
    factor_id text NOT NULL,
    revision  bigint NOT NULL,
    record    jsonb NOT NULL,
    PRIMARY KEY (user_id, factor_id)
);

-- RFC 8176 authentication methods of the login behind a grant; grants made before had a
-- password only.
ALTER TABLE grants ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}';
