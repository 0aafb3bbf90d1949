-- What a relying party registers beyond redirect URIs (issue 18): the response
-- types it may ask for (OAuth 2.0 Multiple Response Types; `token` is never
-- offered, RFC 9700 §2.1.2), whether its authorization requests must be pushed
-- first (RFC 9126 require_pushed_authorization_requests), its public keys for
-- signed request objects (RFC 9101) and private_key_jwt (RFC 7523), inline or by
-- URL but not both, and where the pool tells it that a login ended
-- (OpenID Connect Back-Channel and Front-Channel Logout 1.0). `secret_jwt_enc`:
-- the client's secret, encrypted with the master key, kept beside its hash for
-- what needs the secret itself (client_secret_jwt and HS256 request objects are
-- HMACs keyed with it); set when a secret is made or rotated from now on.
ALTER TABLE clients
    ADD COLUMN response_types text[] NOT NULL DEFAULT '{code}'
        CHECK (cardinality(response_types) > 0
               AND response_types <@ '{code,id_token,"code id_token"}'::text[]),
    ADD COLUMN require_par boolean NOT NULL DEFAULT false,
    ADD COLUMN jwks jsonb,
    ADD COLUMN jwks_uri text,
    ADD COLUMN backchannel_logout_uri text,
    ADD COLUMN frontchannel_logout_uri text,
    ADD COLUMN secret_jwt_enc bytea;
ALTER TABLE clients
    ADD CONSTRAINT clients_one_key_source CHECK (jwks IS NULL OR jwks_uri IS NULL);
