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

-- Counts one request by p_key at p_now against p_limit requests per
-- p_window (both microseconds), atomically across replicas: a
-- transaction-scoped advisory lock serialises the checks of one key.
-- Returns whether the request is allowed, the requests left after it, and
-- how long (microseconds) until the next one would be allowed.
CREATE FUNCTION pakkt_take_request(p_key TEXT, p_now BIGINT, p_window BIGINT, p_limit BIGINT)
RETURNS TABLE (allowed BIGINT, remaining BIGINT, reset_after BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    used   BIGINT;
    oldest BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('pakkt_take_request:' || p_key, 0));
    DELETE FROM api_requests WHERE key_id = p_key AND at <= p_now - p_window;
    SELECT COUNT(*), MIN(at) INTO used, oldest FROM api_requests WHERE key_id = p_key;
    IF used < p_limit THEN
        INSERT INTO api_requests (key_id, at) VALUES (p_key, p_now);
        used := used + 1;
        allowed := 1;
        IF oldest IS NULL THEN
            oldest := p_now;
        END IF;
    ELSE
        allowed := 0;
    END IF;
    remaining := p_limit - used;
    IF used < p_limit THEN
        reset_after := 0;
    ELSE
        reset_after := GREATEST(oldest + p_window - p_now, 0);
    END IF;
    RETURN NEXT;
END
$$;
