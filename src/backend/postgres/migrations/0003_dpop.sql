-- Version 3: a refresh token bound to a DPoP key (RFC 9449 §5: a public client's refresh
-- tokens), by the key's RFC 7638 thumbprint; each rotation carries it to the successor.

ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt text;
