-- Version 13: the console's counts of clients, users and live (unrevoked) grants come from
-- counters that triggers keep, not from count(*) over the tables, which read every row
-- (issue 29). Each count is spread over 8 rows, one picked at random per change, so that
-- concurrent writers seldom wait on the same row; a count is the sum of its rows.
--
-- The triggers are per statement and read the statement's transition tables: a purge that
-- deletes 5,000 grants changes a counter once. The counts start from count(*) here, in the
-- migration's transaction, with the three tables locked against writes from its first
-- statement to its end, so no write falls between the count and the triggers. The lock comes
-- first because LOCK takes no snapshot: under a default isolation of REPEATABLE READ the
-- transaction's snapshot is its first query's, and it must not predate the lock.
LOCK TABLE clients, users, grants IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE record_counts (
    kind text NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (kind, shard)
);

CREATE FUNCTION record_counts_add(counted text, delta bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO record_counts (kind, shard, n) VALUES (counted, floor(random() * 8)::smallint, delta)
    ON CONFLICT (kind, shard) DO UPDATE SET n = record_counts.n + EXCLUDED.n
$$;

-- Clients and users: one more per row inserted, one less per row deleted (TG_ARGV[0] names
-- the count).
CREATE FUNCTION record_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT count(*) INTO delta FROM inserted;
    IF delta <> 0 THEN PERFORM record_counts_add(TG_ARGV[0], delta); END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION record_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT count(*) INTO delta FROM deleted;
    IF delta <> 0 THEN PERFORM record_counts_add(TG_ARGV[0], -delta); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER clients_counted_in AFTER INSERT ON clients REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted('clients');
CREATE TRIGGER clients_counted_out AFTER DELETE ON clients REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted('clients');
CREATE TRIGGER users_counted_in AFTER INSERT ON users REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_inserted('users');
CREATE TRIGGER users_counted_out AFTER DELETE ON users REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION record_counts_deleted('users');

-- Live grants: a grant counts while it is not revoked, so an update counts the rows it
-- revoked (or, from an import, made live again) too.
CREATE FUNCTION live_grants_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT count(*) INTO delta FROM inserted WHERE NOT revoked;
    IF delta <> 0 THEN PERFORM record_counts_add('live_grants', delta); END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION live_grants_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT count(*) INTO delta FROM deleted WHERE NOT revoked;
    IF delta <> 0 THEN PERFORM record_counts_add('live_grants', -delta); END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION live_grants_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT (SELECT count(*) FROM inserted WHERE NOT revoked) - (SELECT count(*) FROM deleted WHERE NOT revoked)
        INTO delta;
    IF delta <> 0 THEN PERFORM record_counts_add('live_grants', delta); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER grants_counted_in AFTER INSERT ON grants REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION live_grants_inserted();
CREATE TRIGGER grants_counted_out AFTER DELETE ON grants REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION live_grants_deleted();
CREATE TRIGGER grants_counted_changed AFTER UPDATE ON grants
    REFERENCING OLD TABLE AS deleted NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION live_grants_updated();

INSERT INTO record_counts (kind, shard, n)
    SELECT 'clients', 0, count(*) FROM clients
    UNION ALL SELECT 'users', 0, count(*) FROM users
    UNION ALL SELECT 'live_grants', 0, count(*) FROM grants WHERE NOT revoked;
