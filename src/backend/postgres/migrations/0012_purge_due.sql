-- Version 12: the purge finds what is due through indexes, so its work follows what expired,
-- not what is stored (issue 29). No row is rewritten here (the new columns take a constant
-- default, which PostgreSQL stores once): the rows already there are due at once, and the
-- purge files each again by its own time, a batch at a time.
--
-- `refresh_tokens.purge_at`: when the purge looks at a family next. Set to its expiry when the
-- family is written (a trigger, so rows that nodes of the earlier version insert during a
-- rolling upgrade get one too); a rotation leaves it, and the purge files the family again
-- when it finds it rotated. No rotation writes the indexed column.
ALTER TABLE refresh_tokens ADD COLUMN purge_at bigint NOT NULL DEFAULT 0;
CREATE INDEX refresh_tokens_by_purge_at ON refresh_tokens (purge_at);
CREATE FUNCTION refresh_tokens_purge_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.purge_at := NEW.expires_at;
    RETURN NEW;
END $$;
CREATE TRIGGER refresh_tokens_purge_at BEFORE INSERT ON refresh_tokens
    FOR EACH ROW EXECUTE FUNCTION refresh_tokens_purge_at();

-- `grants.due_at`: when the purge looks at a grant that may never get a refresh family (its
-- creation, by a trigger as above); cleared when the purge finds it has one (it then goes
-- with its family).
ALTER TABLE grants ADD COLUMN due_at bigint DEFAULT 0;
CREATE INDEX grants_due ON grants (due_at) WHERE due_at IS NOT NULL;
CREATE FUNCTION grants_due_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.due_at := NEW.created_at;
    RETURN NEW;
END $$;
CREATE TRIGGER grants_due_at BEFORE INSERT ON grants FOR EACH ROW EXECUTE FUNCTION grants_due_at();

-- Short-lived records, by expiry.
CREATE INDEX codes_by_expiry ON codes (expires_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX revoked_access_by_expiry ON revoked_access (expires_at);
CREATE INDEX scratch_by_expiry ON scratch (expires_at);
