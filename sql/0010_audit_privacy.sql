-- Issue 19, parts 4 and 5: the audit trail, and personal data as PIPL requires.

-- Every change made by an admin (console), a management client (API), the CLI or
-- the platform itself (retention), written in the same transaction as the change
-- (portal/audit). Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE,
-- whatever role the portal connects as. pool_id has no foreign key: the trail of
-- a deleted pool outlives it (the deletion itself is one of its rows), and
-- pool_slug keeps the name it had. No personal data of a pool's users is ever
-- written here (users are named by their id, which nothing links to a person once
-- they are deleted), and no secret (portal/audit redacts them).
CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id         bigint,
    pool_slug       text,
    -- 'admin': an admin in the console (actor_id: admins.id); 'client': a
    -- management client (actor_id: its client_id); 'cli': the portal command;
    -- 'system': the portal's own periodic work.
    actor_type      text NOT NULL CHECK (actor_type IN ('admin', 'client', 'cli', 'system')),
    actor_id        text NOT NULL,
    actor_label     text,
    action          text NOT NULL CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    target          text,
    before          jsonb,
    after           jsonb,
    ip              inet,
    user_agent      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_pool_time_idx ON audit_log (pool_id, created_at DESC, id DESC);
CREATE INDEX audit_log_time_idx ON audit_log (created_at DESC, id DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Retention of login events (portal/privacy): a pool keeps its login events
-- login_retention_days, and their IP address and user agent ip_retention_days
-- (never longer than the events themselves).
ALTER TABLE pools
    ADD COLUMN login_retention_days integer NOT NULL DEFAULT 180
        CHECK (login_retention_days BETWEEN 1 AND 3650),
    ADD COLUMN ip_retention_days integer NOT NULL DEFAULT 30
        CHECK (ip_retention_days BETWEEN 1 AND 3650),
    ADD CONSTRAINT pools_ip_retention_within CHECK (ip_retention_days <= login_retention_days);

-- A deleted user's login events keep only this: one random id per deleted user
-- (the same on each of their events, so counts of distinct users still hold),
-- linked to nothing.
ALTER TABLE login_events ADD COLUMN pseudonym uuid;
