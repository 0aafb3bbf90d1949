-- Management clients (issue 19, part 2): a client of a pool that calls the pool's
-- management API (/api/v1) with the OAuth 2.0 client credentials grant. It is
-- always confidential, has no redirect URIs (it never logs a person in), and
-- holds management scopes instead of OpenID Connect ones. An application
-- client keeps an empty list.
ALTER TABLE clients
    ADD COLUMN is_management boolean NOT NULL DEFAULT false,
    ADD COLUMN management_scopes text[] NOT NULL DEFAULT '{}'
        CHECK (management_scopes <@ '{users:read,users:write,clients:read,clients:write,logins:read,webhooks:write,settings:write}'::text[]);
ALTER TABLE clients
    ADD CONSTRAINT clients_management_kind CHECK (
        CASE WHEN is_management
             THEN NOT is_public AND NOT is_default AND cardinality(management_scopes) > 0
                  AND cardinality(redirect_uris) = 0 AND cardinality(web_origins) = 0
                  AND cardinality(post_logout_redirect_uris) = 0
             ELSE cardinality(management_scopes) = 0
        END);
