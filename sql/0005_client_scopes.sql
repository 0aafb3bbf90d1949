-- What a client may be granted (issue 16, finding 6): its scopes. `openid` always;
-- `offline_access` (refresh tokens) only for confidential clients, whose refresh
-- tokens need the client's secret. Every path that issues tokens (the QR
-- exchange, the authorization code and refresh grants, the pool's own page)
-- grants at most these.
ALTER TABLE clients
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{openid,profile,phone}'
        CHECK (scopes <@ '{openid,profile,phone,offline_access}'::text[] AND 'openid' = ANY (scopes));
ALTER TABLE clients
    ADD CONSTRAINT clients_public_no_refresh CHECK (NOT (is_public AND 'offline_access' = ANY (scopes)));
-- Existing confidential clients keep what they could get before; public clients
-- lose refresh tokens, which needed no secret.
UPDATE clients SET scopes = '{openid,profile,phone,offline_access}' WHERE NOT is_public;
