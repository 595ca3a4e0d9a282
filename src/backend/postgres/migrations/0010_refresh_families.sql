-- Version 10: one row per refresh-token family (issue 29). A row's key is the hash of the
-- family's id, which is also its first token; `current_hash` is the hash of the family's
-- current token once it has been rotated. A rotation rewrites the row in place instead of
-- inserting a row per token, so a grant keeps one row however often it is refreshed.
-- A rotated row also has `rotated` set, so a node of the earlier version, during a rolling
-- upgrade, takes the family's first token for a spent one (and refuses the later ones, which
-- it has no row for).
ALTER TABLE refresh_tokens ADD COLUMN current_hash bytea;
