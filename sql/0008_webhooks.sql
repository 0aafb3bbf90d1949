-- Issue 19, part 3: webhooks (portal/webhooks), fed by the outbox (events, sql/0007).

-- A pool's endpoints. The signing secret is sealed (portal/stores/crypto.py, bound to
-- the endpoint's id); it is shown once, when made or rotated.
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pool_id         bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    url             text NOT NULL CHECK (char_length(url) BETWEEN 8 AND 2000),
    description     text NOT NULL DEFAULT '' CHECK (char_length(description) <= 200),
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    secret_enc      bytea NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    -- 'failing': disabled by the portal after days of failed deliveries; 'admin'.
    disabled_reason text CHECK (disabled_reason IN ('failing', 'admin')),
    disabled_at     timestamptz,
    -- The first failed attempt since the last success (NULL: not failing).
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_pool_idx ON webhook_endpoints (pool_id, created_at);

-- One event for one endpoint: its webhook-id is the event's id, the same on every
-- attempt and replay.
CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pool_id         bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- Deferred: the fan-out below writes deliveries before its event's row.
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE
                    DEFERRABLE INITIALLY DEFERRED,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_time_idx ON webhook_deliveries (created_at);

-- Every attempt: what came back (or why nothing did), and how long it took.
CREATE TABLE webhook_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    status_code     integer,
    error           text,
    latency_ms      integer NOT NULL,
    response_excerpt text,
    replay          boolean NOT NULL DEFAULT false
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- The fan-out, in the transaction of the change: one delivery and one job
-- (webhooks.deliver, procrastinate) per enabled endpoint subscribed to the event.
-- An event no endpoint subscribes to is not kept (the trigger drops the row): the
-- login path then costs one indexed look-up.
CREATE FUNCTION webhooks_fan_out() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    ids bigint[];
BEGIN
    WITH d AS (
        INSERT INTO webhook_deliveries (pool_id, endpoint_id, event_id)
        SELECT NEW.pool_id, e.id, NEW.id
          FROM webhook_endpoints e
         WHERE e.pool_id = NEW.pool_id AND e.enabled AND NEW.type = ANY (e.events)
        RETURNING id
    )
    SELECT array_agg(id) INTO ids FROM d;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM procrastinate_defer_jobs_v1(ARRAY(
        SELECT ROW('webhooks', 'webhooks.deliver', 0, NULL, NULL,
                   jsonb_build_object('delivery_id', i), NULL)::procrastinate_job_to_defer_v1
          FROM unnest(ids) AS i
    ));
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_webhooks_fan_out
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION webhooks_fan_out();
