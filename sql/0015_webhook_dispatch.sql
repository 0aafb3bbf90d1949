-- Issue 19: first attempts without a procrastinate job each (portal/webhooks/dispatch.py).
--
-- A new delivery is `dispatch`: the first-attempt dispatcher in `portal worker`
-- claims such rows in batches (`claimed_at`: a lease; a claim older than the lease,
-- i.e. of a worker that died, is taken again), delivers them, and records the
-- attempts in one statement. Only a failed first attempt becomes a procrastinate
-- job (webhooks.deliver, the 24 h retry schedule); replays stay jobs.
ALTER TABLE webhook_deliveries
    ADD COLUMN dispatch   boolean NOT NULL DEFAULT false,
    ADD COLUMN claimed_at timestamptz;

CREATE INDEX webhook_deliveries_dispatch_idx ON webhook_deliveries (id) WHERE dispatch;

-- The fan-out writes the deliveries and wakes the dispatchers (NOTIFY is sent at
-- commit, once per transaction and channel); no job per delivery any more.
CREATE OR REPLACE FUNCTION webhooks_fan_out() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO webhook_deliveries (pool_id, endpoint_id, event_id, dispatch)
    SELECT NEW.pool_id, e.id, NEW.id, true
      FROM webhook_endpoints e
     WHERE e.pool_id = NEW.pool_id AND e.enabled AND NEW.type = ANY (e.events);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('webhooks_dispatch', '');
    RETURN NEW;
END;
$$;
