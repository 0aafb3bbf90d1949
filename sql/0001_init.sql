-- Initial schema: user pools and everything that belongs to one.
-- Every tenant-scoped table carries pool_id, and every query filters on it.

CREATE TABLE pools (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug                text NOT NULL UNIQUE
                        CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    name                text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    logo_png            bytea,
    logo_sha256         text,
    logo_shape          text NOT NULL DEFAULT 'square' CHECK (logo_shape IN ('square', 'round')),
    callback_url        text,
    -- NULL: served by the platform's default mini program.
    mp_appid            text,
    mp_secret_enc       bytea,
    phone_required      boolean NOT NULL DEFAULT false,
    login_only          boolean NOT NULL DEFAULT false,
    link_by_phone       boolean NOT NULL DEFAULT false,
    qr_lifetime         integer NOT NULL DEFAULT 120 CHECK (qr_lifetime BETWEEN 30 AND 600),
    id_token_ttl        integer NOT NULL DEFAULT 3600 CHECK (id_token_ttl BETWEEN 60 AND 86400),
    access_token_ttl    integer NOT NULL DEFAULT 3600 CHECK (access_token_ttl BETWEEN 60 AND 86400),
    refresh_token_ttl   integer NOT NULL DEFAULT 2592000
                        CHECK (refresh_token_ttl BETWEEN 3600 AND 31536000),
    id_token_alg        text NOT NULL DEFAULT 'RS256' CHECK (id_token_alg IN ('RS256', 'ES256')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((mp_appid IS NULL) = (mp_secret_enc IS NULL))
);

CREATE TABLE clients (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id                     bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    client_id                   text NOT NULL UNIQUE,
    name                        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- NULL for public clients (SPAs, the SDK): they authenticate with PKCE only.
    secret_hash                 text,
    is_public                   boolean NOT NULL,
    is_default                  boolean NOT NULL DEFAULT false,
    redirect_uris               text[] NOT NULL DEFAULT '{}',
    post_logout_redirect_uris   text[] NOT NULL DEFAULT '{}',
    web_origins                 text[] NOT NULL DEFAULT '{}',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CHECK (is_public = (secret_hash IS NULL))
);
CREATE INDEX clients_pool_idx ON clients (pool_id);
CREATE UNIQUE INDEX clients_one_default_per_pool ON clients (pool_id) WHERE is_default;

CREATE TABLE signing_keys (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id             bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    kid                 text NOT NULL UNIQUE,
    alg                 text NOT NULL CHECK (alg IN ('RS256', 'ES256')),
    public_jwk          jsonb NOT NULL,
    private_jwk_enc     bytea NOT NULL,
    active              boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    retired_at          timestamptz,
    -- A retired key stays published in JWKS until every token it signed has expired.
    publish_until       timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active_per_pool ON signing_keys (pool_id) WHERE active;

CREATE TABLE users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool_id             bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    nickname            text,
    avatar_url          text,
    -- Digits only, without country code; the country code apart ("86").
    phone_number        text,
    phone_country_code  text,
    blocked             boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    last_login_at       timestamptz
);
CREATE INDEX users_pool_created_idx ON users (pool_id, created_at DESC);
CREATE INDEX users_pool_phone_idx ON users (pool_id, phone_number) WHERE phone_number IS NOT NULL;

CREATE TABLE wechat_identities (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id             bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    appid               text NOT NULL,
    openid              text NOT NULL,
    unionid             text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_login_at       timestamptz,
    UNIQUE (pool_id, appid, openid)
);
CREATE INDEX wechat_identities_user_idx ON wechat_identities (user_id);
CREATE INDEX wechat_identities_unionid_idx ON wechat_identities (pool_id, unionid)
    WHERE unionid IS NOT NULL;

CREATE TABLE refresh_tokens (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id             bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    client_pk           bigint NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash          text NOT NULL UNIQUE,
    -- All tokens descended from one login share a family; reuse of a rotated
    -- token revokes the whole family (OAuth 2.0 Security BCP, refresh rotation).
    family_id           uuid NOT NULL,
    scope               text NOT NULL,
    auth_time           timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    rotated_at          timestamptz,
    revoked_at          timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE admins (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email               text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
    password_hash       text NOT NULL,
    is_superadmin       boolean NOT NULL DEFAULT false,
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_login_at       timestamptz
);
CREATE UNIQUE INDEX admins_email_idx ON admins (email);

CREATE TABLE pool_admins (
    pool_id             bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    admin_id            bigint NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, admin_id)
);
CREATE INDEX pool_admins_admin_idx ON pool_admins (admin_id);

CREATE TABLE login_events (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id             bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    user_id             uuid REFERENCES users (id) ON DELETE SET NULL,
    client_id           text,
    appid               text,
    openid              text,
    -- 'success', 'signup', or the error code that refused the login.
    result              text NOT NULL,
    ip                  inet,
    user_agent          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_events_pool_time_idx ON login_events (pool_id, created_at DESC);
CREATE INDEX login_events_user_idx ON login_events (user_id, created_at DESC);
