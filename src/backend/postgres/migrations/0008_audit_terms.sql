-- Version 8: the audit trail's filters read an index (issue 29: a filter that matched little
-- read the whole trail). Each entry is listed under its terms (`AuditRecord::terms`): a byte
-- naming the field (a: action, c: actor, t: target) and the first 16 bytes of the SHA-256 of
-- the value.
CREATE TABLE audit_terms (
    term bytea NOT NULL,
    id   text NOT NULL REFERENCES audit (id) ON DELETE CASCADE,
    PRIMARY KEY (term, id)
);
CREATE INDEX audit_terms_by_id ON audit_terms (id);

INSERT INTO audit_terms (term, id)
SELECT DISTINCT field || substring(sha256(convert_to(value, 'UTF8')) FROM 1 FOR 16), id
FROM (
    SELECT '\x61'::bytea AS field, record->>'action' AS value, id FROM audit
    UNION ALL SELECT '\x63'::bytea, record->'actor'->>'id', id FROM audit
    UNION ALL SELECT '\x63'::bytea, record->'actor'->>'name', id FROM audit
        WHERE record->'actor'->>'kind' <> 'client'
    UNION ALL SELECT '\x74'::bytea, record->>'target_id', id FROM audit
    UNION ALL SELECT '\x74'::bytea, record->>'target_name', id FROM audit
) AS terms
WHERE value IS NOT NULL;
