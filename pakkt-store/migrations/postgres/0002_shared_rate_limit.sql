-- The per-key request limit, shared by every server replica on this
-- database: one row per request allowed in the last rolling minute.
-- Rows are not tied to api_keys, so a revoked key's requests simply age
-- out; each check prunes its key's expired rows, and the replicas sweep
-- all expired rows about once a minute.
CREATE TABLE api_requests (
    key_id  TEXT NOT NULL,
    at      BIGINT NOT NULL -- microseconds since the epoch
);
CREATE INDEX api_requests_key ON api_requests(key_id, at);
CREATE INDEX api_requests_at ON api_requests(at);

-- Counts one request by p_key against p_limit requests per p_window
-- (microseconds), atomically across replicas: a transaction-scoped
-- advisory lock serialises the checks of one key. The time is the
-- database's clock, so that replicas whose clocks differ count alike,
-- unless p_now (microseconds since the epoch) is given.
-- Returns whether the request is allowed, the requests left after it, and
-- how long (microseconds) until the next one would be allowed. More rows
-- than the limit (the limit was lowered) refuse until enough have aged out.
CREATE FUNCTION pakkt_take_request(p_key TEXT, p_now BIGINT, p_window BIGINT, p_limit BIGINT)
RETURNS TABLE (allowed BIGINT, remaining BIGINT, reset_after BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    now_us BIGINT;
    used   BIGINT;
    frees  BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('pakkt_take_request:' || p_key, 0));
    now_us := COALESCE(p_now, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT);
    DELETE FROM api_requests WHERE key_id = p_key AND at <= now_us - p_window;
    SELECT COUNT(*) INTO used FROM api_requests WHERE key_id = p_key;
    IF used < p_limit THEN
        INSERT INTO api_requests (key_id, at) VALUES (p_key, now_us);
        used := used + 1;
        allowed := 1;
    ELSE
        allowed := 0;
    END IF;
    remaining := GREATEST(p_limit - used, 0);
    IF used < p_limit THEN
        reset_after := 0;
    ELSE
        -- The next request fits once all but limit - 1 of the rows are
        -- out of the window: when the (used - limit + 1)-th oldest leaves.
        SELECT at INTO frees FROM api_requests WHERE key_id = p_key
            ORDER BY at OFFSET used - p_limit LIMIT 1;
        reset_after := LEAST(GREATEST(COALESCE(frees, now_us) + p_window - now_us, 0), p_window);
    END IF;
    RETURN NEXT;
END
$$;
