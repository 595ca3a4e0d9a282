-- Version 5: when each key last became the signing key, so the console can tell when retiring
-- the key it replaced is safe (the longest access-token lifetime after the promotion).

ALTER TABLE keys ADD COLUMN promoted_at bigint;
