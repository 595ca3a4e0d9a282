-- Version 4: the audit trail (who changed what, and security events), newest first by id
-- (the time in milliseconds as 16 hex digits, then random ones), purged by age.

CREATE TABLE audit (
    id     text PRIMARY KEY,
    at_ms  bigint NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX audit_at_ms ON audit (at_ms);
