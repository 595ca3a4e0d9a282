-- Version 8: the audit trail's filters read an index (issue 29: a filter that matched little
-- read the whole trail). Each entry is listed under its terms, as `AuditRecord::terms` makes
-- them: a byte naming the field (a: action, c: actor, t: target) and the first 16 bytes of the
-- SHA-256 of the value; the actor's name only when the actor is not a client. A trigger lists
-- every entry appended, so entries written by nodes of an earlier version during a rolling
-- upgrade are listed too.
CREATE TABLE audit_terms (
    term bytea NOT NULL,
    id   text NOT NULL REFERENCES audit (id) ON DELETE CASCADE,
    PRIMARY KEY (term, id)
);
CREATE INDEX audit_terms_by_id ON audit_terms (id);

CREATE FUNCTION audit_terms_of(entry_id text, entry jsonb) RETURNS TABLE (term bytea, id text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT field || substring(sha256(convert_to(value, 'UTF8')) FROM 1 FOR 16), entry_id
    FROM (VALUES
        ('\x61'::bytea, entry->>'action'),
        ('\x63'::bytea, entry->'actor'->>'id'),
        ('\x63'::bytea, CASE WHEN entry->'actor'->>'kind' <> 'client' THEN entry->'actor'->>'name' END),
        ('\x74'::bytea, entry->>'target_id'),
        ('\x74'::bytea, entry->>'target_name')
    ) AS terms (field, value)
    WHERE value IS NOT NULL
$$;

CREATE FUNCTION audit_terms_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_terms (term, id) SELECT * FROM audit_terms_of(NEW.id, NEW.record);
    RETURN NULL;
END
$$;

INSERT INTO audit_terms (term, id) SELECT t.* FROM audit, audit_terms_of(audit.id, audit.record) AS t;

CREATE TRIGGER audit_terms_on_insert AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_terms_on_insert();
