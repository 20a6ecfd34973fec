-- agent_engine_settle_v1(doc jsonb) → jsonb
--
-- Swaps a hold for what its calls cost, in one call (the PostgreSQL twin of engine/budgets.py
-- `settle`, which SQLite runs in Python):
--   {"reservation_id": …, "counter_ids": [...], "actual_usd": "0.0009", "actual_tokens": 900,
--    "calls": [...], "thresholds": [50, 80, 100]}
-- The counters are locked in id order, then the reservation (the order every writer takes).
-- A hold still held comes off its counters; the actual spend is added either way (a hold
-- released meanwhile was still spent). Each counter's alerted_percent becomes the highest
-- threshold its spend now reaches — the rule of domain/budget_thresholds.py
-- `thresholds_reached`: spent * 100 >= limit * t, any spend reaching every threshold of a zero
-- limit — in the same statement, so a threshold is announced once. Answers
-- {"settled": false} for a reservation already settled (nothing written), else
-- {"settled": true, "counters": [{counter after, "alerted_before": n}, …]}.
CREATE OR REPLACE FUNCTION agent_engine_settle_v1(doc jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[] := ARRAY(SELECT jsonb_array_elements_text(doc -> 'counter_ids')::uuid);
    usd numeric := (doc ->> 'actual_usd')::numeric;
    tokens bigint := (doc ->> 'actual_tokens')::bigint;
    thresholds int[] := ARRAY(SELECT jsonb_array_elements_text(doc -> 'thresholds')::int);
    hold budget_reservations%ROWTYPE;
    held boolean;
    answer jsonb;
BEGIN
    PERFORM 1 FROM budget_counters WHERE id = ANY (ids) ORDER BY id FOR UPDATE;
    SELECT * INTO hold FROM budget_reservations
    WHERE id = (doc ->> 'reservation_id')::uuid FOR UPDATE;
    IF NOT FOUND OR hold.status = 'settled' THEN
        RETURN jsonb_build_object('settled', false);
    END IF;
    held := hold.status = 'held';
    WITH moved AS (
        UPDATE budget_counters AS c
        SET reserved_usd = c.reserved_usd - CASE WHEN held THEN hold.amount_usd ELSE 0 END,
            reserved_tokens = c.reserved_tokens
                - CASE WHEN held THEN hold.amount_tokens ELSE 0 END,
            spent_usd = c.spent_usd + usd,
            spent_tokens = c.spent_tokens + tokens,
            alerted_percent = GREATEST(c.alerted_percent, COALESCE((
                SELECT max(t) FROM unnest(thresholds) AS t
                WHERE (c.limit_usd IS NOT NULL AND (
                           (c.limit_usd <= 0 AND c.spent_usd + usd > 0)
                        OR (c.limit_usd > 0 AND (c.spent_usd + usd) * 100 >= c.limit_usd * t)))
                   OR (c.limit_tokens IS NOT NULL AND (
                           (c.limit_tokens <= 0 AND c.spent_tokens + tokens > 0)
                        OR (c.limit_tokens > 0
                            AND (c.spent_tokens + tokens) * 100 >= c.limit_tokens * t)))
            ), 0)),
            updated_at = now()
        FROM (SELECT id, alerted_percent AS alerted_before FROM budget_counters
              WHERE id = ANY (ids)) AS before
        WHERE c.id = before.id
        RETURNING c.*, before.alerted_before
    )
    SELECT COALESCE(jsonb_agg(to_jsonb(moved)), '[]'::jsonb) INTO answer FROM moved;
    UPDATE budget_reservations
    SET status = 'settled', actual_usd = usd, actual_tokens = tokens, calls = doc -> 'calls',
        settled_at = now()
    WHERE id = hold.id;
    RETURN jsonb_build_object('settled', true, 'counters', answer);
END;
$$;
