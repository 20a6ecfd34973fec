-- agent_engine_apply_changes_v3(batch jsonb) → boolean[]
--
-- Writes a batch of change sets (storage/changes.py) in one call: for each element, in order,
--   {"run_id": …, "expected_version": n | null, "run": {column: value, …},
--    "steps": [{"id": …, "set": {column: value, …}}, …],
--    "inserts": [[table, [row, …]], …],
--    "blobs": [{"hash": …, "size": n, "content": "\x<hex>", "created_at": …}, …]}
-- What v3 changes in v2: a blob already stored is kept, but its created_at moves on to the
-- write's (ON CONFLICT DO UPDATE, which also locks that row until this transaction ends). A
-- blob's created_at is thus when it was last written, and the blob collection of retention
-- (storage/blob_collection.py) leaves alone every blob written within its grace period and
-- every row a writer holds: a payload stored long ago that a write in flight references again
-- is never collected before that write commits.
-- As in v2, the blobs of the whole batch are inserted first, in hash order (two batches never
-- wait on each other's blobs in opposite orders), and a blob of an element whose guard then
-- fails stays stored, unused, until a collection finds no row referencing it.
-- An element with an expected_version updates its run only if the run's version is still that
-- (every write of a run bumps its version, a trigger makes sure): otherwise nothing of that
-- element is written and its answer is false. An element without one is a new run: its rows are
-- only inserted. Columns are taken from the documents' keys, so the function needs no change when
-- a table gains a column. Values are JSON as jsonb_populate_record reads them (ISO times, uuids
-- and decimals as text or numbers, JSON columns as JSON).
CREATE OR REPLACE FUNCTION agent_engine_apply_changes_v3(batch jsonb)
RETURNS boolean[] LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    insert_item jsonb;
    table_name text;
    step_columns text;
    columns text;
    touched integer;
    applied boolean[] := '{}';
BEGIN
    INSERT INTO blobs (hash, size, content, created_at)
    SELECT DISTINCT ON (b.hash) b.hash, b.size, b.content, b.created_at
    FROM jsonb_array_elements(batch) AS element(value),
         jsonb_populate_recordset(NULL::blobs, COALESCE(element.value -> 'blobs', '[]'::jsonb)) AS b
    ORDER BY b.hash
    ON CONFLICT (hash) DO UPDATE SET created_at = EXCLUDED.created_at
        WHERE blobs.created_at < EXCLUDED.created_at;
    FOR item IN SELECT value FROM jsonb_array_elements(batch) LOOP
        IF item -> 'expected_version' <> 'null'::jsonb THEN
            -- The guard: the run is as the change set's author last read it.
            SELECT string_agg(format('%I', key), ', ') INTO columns
            FROM jsonb_object_keys(item -> 'run') AS key;
            EXECUTE format(
                'UPDATE agent_runs AS r SET (%1$s) = (SELECT %1$s FROM jsonb_populate_record(r, $1))'
                ' WHERE r.id = $2 AND r.version = $3', columns)
            USING item -> 'run', (item ->> 'run_id')::uuid, (item ->> 'expected_version')::bigint;
            GET DIAGNOSTICS touched = ROW_COUNT;
            IF touched = 0 THEN
                applied := applied || false;  -- the run moved on (or is gone): write nothing
                CONTINUE;
            END IF;
            -- One statement for the run's changed steps: each keeps its own value of any
            -- column another step's change names (jsonb_populate_record starts from the row).
            SELECT string_agg(DISTINCT format('%I', key), ', ') INTO step_columns
            FROM jsonb_array_elements(item -> 'steps') AS patch, jsonb_object_keys(patch -> 'set') AS key;
            IF step_columns IS NOT NULL THEN
                EXECUTE format(
                    'UPDATE steps AS s SET (%1$s) = (SELECT %1$s FROM jsonb_populate_record(s, c.patch -> ''set''))'
                    ' FROM jsonb_array_elements($1) AS c(patch)'
                    ' WHERE s.id = (c.patch ->> ''id'')::uuid AND s.run_id = $2', step_columns)
                USING item -> 'steps', (item ->> 'run_id')::uuid;
                GET DIAGNOSTICS touched = ROW_COUNT;
                IF touched <> jsonb_array_length(item -> 'steps') THEN
                    RAISE EXCEPTION 'run %: a changed step is not a step of the run', item ->> 'run_id'
                        USING ERRCODE = 'foreign_key_violation';
                END IF;
            END IF;
        END IF;
        FOR insert_item IN SELECT value FROM jsonb_array_elements(item -> 'inserts') LOOP
            table_name := insert_item ->> 0;
            SELECT string_agg(format('%I', key), ', ') INTO columns
            FROM jsonb_object_keys(insert_item -> 1 -> 0) AS key;
            EXECUTE format(
                'INSERT INTO %1$I (%2$s) SELECT %2$s FROM jsonb_populate_recordset(NULL::%1$I, $1)',
                table_name, columns)
            USING insert_item -> 1;
        END LOOP;
        applied := applied || true;
    END LOOP;
    RETURN applied;
END
$$;
