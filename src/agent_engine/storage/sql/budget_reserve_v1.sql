-- agent_engine_reserve_v1(doc jsonb) → jsonb
--
-- Holds one model call's worst case against every budget that applies, in one call (the
-- PostgreSQL twin of engine/budgets.py `_try_reserve`, which SQLite runs in Python):
--   {"counters": [{"scope", "subject", "period", "limit_usd", "limit_tokens"}, …],
--    "definitions": {"project": name | null, "api_key": id | null, "period": "2026-12"},
--    "amount_usd": "0.001", "amount_tokens": 1200,
--    "reservation": {row of budget_reservations without counter_ids}}
-- The monthly budgets of the project and key are read here (``budgets``) and added to the
-- given counters; a counter missing for its period is created with its budget's limits. All
-- counters are then locked in id order (one order for every writer) and the hold is added to
-- each only if it fits every one: spent + reserved + hold within each limit (equal fits).
-- Answers {"none": true} when no budget applies (nothing written), {"refused": counter} with
-- the first counter it does not fit (nothing written), else {"counter_ids": [...],
-- "fraction_left": f} where f is the smallest share of a USD limit left once held (null: no
-- USD limit), which the budget saver routes by.
CREATE OR REPLACE FUNCTION agent_engine_reserve_v1(doc jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    usd numeric := (doc ->> 'amount_usd')::numeric;
    tokens bigint := (doc ->> 'amount_tokens')::bigint;
    wanted jsonb := COALESCE(doc -> 'counters', '[]'::jsonb);
    counter budget_counters%ROWTYPE;
    ids uuid[] := '{}';
    fraction numeric;
BEGIN
    SELECT wanted || COALESCE(jsonb_agg(jsonb_build_object(
        'scope', b.scope, 'subject', b.subject, 'period', doc -> 'definitions' ->> 'period',
        'limit_usd', b.limit_usd, 'limit_tokens', b.limit_tokens)), '[]'::jsonb)
    INTO wanted
    FROM budgets AS b
    WHERE (b.scope = 'project' AND b.subject = doc -> 'definitions' ->> 'project')
       OR (b.scope = 'api_key' AND b.subject = doc -> 'definitions' ->> 'api_key');
    IF jsonb_array_length(wanted) = 0 THEN
        RETURN jsonb_build_object('none', true);
    END IF;
    -- Counters missing for their period are created first (a new run's, a new month's); the
    -- rest already exist, and only the lock below touches them.
    IF (SELECT count(*) FROM budget_counters AS c
        JOIN jsonb_to_recordset(wanted) AS k(scope text, subject text, period text)
          ON c.scope = k.scope AND c.subject = k.subject AND c.period = k.period)
       < jsonb_array_length(wanted) THEN
        INSERT INTO budget_counters (id, scope, subject, period, limit_usd, limit_tokens,
                                     spent_usd, spent_tokens, reserved_usd, reserved_tokens,
                                     alerted_percent, updated_at)
        SELECT gen_random_uuid(), k.scope, k.subject, k.period, k.limit_usd, k.limit_tokens,
               0, 0, 0, 0, 0, now()
        FROM jsonb_to_recordset(wanted)
             AS k(scope text, subject text, period text, limit_usd numeric, limit_tokens bigint)
        ORDER BY k.scope, k.subject, k.period
        ON CONFLICT (scope, subject, period) DO NOTHING;
    END IF;
    FOR counter IN
        SELECT c.* FROM budget_counters AS c
        JOIN jsonb_to_recordset(wanted) AS k(scope text, subject text, period text)
          ON c.scope = k.scope AND c.subject = k.subject AND c.period = k.period
        ORDER BY c.id
        FOR UPDATE OF c
    LOOP
        IF (counter.limit_usd IS NOT NULL
                AND counter.spent_usd + counter.reserved_usd + usd > counter.limit_usd)
           OR (counter.limit_tokens IS NOT NULL
                AND counter.spent_tokens + counter.reserved_tokens + tokens > counter.limit_tokens)
        THEN
            RETURN jsonb_build_object('refused', to_jsonb(counter));
        END IF;
        ids := ids || counter.id;
        IF counter.limit_usd IS NOT NULL AND counter.limit_usd > 0 THEN
            fraction := LEAST(COALESCE(fraction, 1), GREATEST(0,
                (counter.limit_usd - counter.spent_usd - counter.reserved_usd - usd)
                / counter.limit_usd));
        ELSIF counter.limit_usd IS NOT NULL THEN
            fraction := 0;
        END IF;
    END LOOP;
    UPDATE budget_counters
    SET reserved_usd = reserved_usd + usd, reserved_tokens = reserved_tokens + tokens,
        updated_at = now()
    WHERE id = ANY (ids);
    INSERT INTO budget_reservations
    SELECT * FROM jsonb_populate_record(
        NULL::budget_reservations,
        (doc -> 'reservation') || jsonb_build_object('counter_ids', to_jsonb(ids::text[])));
    RETURN jsonb_build_object('counter_ids', to_jsonb(ids::text[]), 'fraction_left', fraction);
END;
$$;
