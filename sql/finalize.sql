-- pg_upkeep finalize: views over the generated functions, and the COMMENT ON
-- text a DBA reads in \df+ and \d+.

CREATE VIEW upkeep.jobs AS
SELECT p.job_id,
       'partitions'::text AS kind,
       p.parent::text AS target,
       coalesce('every ' || p.every::text, 'every naptime') AS schedule,
       p.enabled,
       CASE WHEN NOT p.enabled THEN NULL
            WHEN j.consecutive_failures > 0 THEN j.next_run
            ELSE greatest(j.next_run, s.due_at) END AS next_run,
       j.last_run,
       j.last_status,
       j.last_error,
       coalesce(j.consecutive_failures, 0) AS consecutive_failures,
       j.last_duration
  FROM upkeep.partition_policies p
  LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id
  LEFT JOIN upkeep.partition_state s ON s.job_id = p.job_id
UNION ALL
SELECT a.job_id,
       'archive'::text,
       a.source::text,
       coalesce('every ' || a.every::text, 'every naptime'),
       a.enabled,
       CASE WHEN a.enabled THEN j.next_run END,
       j.last_run,
       j.last_status,
       j.last_error,
       coalesce(j.consecutive_failures, 0),
       j.last_duration
  FROM upkeep.archive_policies a
  LEFT JOIN upkeep.job_state j ON j.job_id = a.job_id
UNION ALL
SELECT m.job_id,
       'matview'::text,
       m.matview::text,
       'every ' || m.every::text,
       m.enabled,
       CASE WHEN m.enabled THEN j.next_run END,
       j.last_run,
       j.last_status,
       j.last_error,
       coalesce(j.consecutive_failures, 0),
       j.last_duration
  FROM upkeep.matview_policies m
  LEFT JOIN upkeep.job_state j ON j.job_id = m.job_id
UNION ALL
SELECT x.job_id, x.kind, x.target, 'every ' || x.every::text, x.enabled,
       CASE WHEN x.enabled THEN j.next_run END,
       j.last_run, j.last_status, j.last_error, coalesce(j.consecutive_failures, 0), j.last_duration
  FROM (SELECT job_id, 'index_snapshot'::text AS kind, 'index health snapshot'::text AS target, every, enabled
          FROM upkeep.index_snapshot_policy
        UNION ALL
        SELECT job_id, 'reindex', 'automatic reindex', every, enabled FROM upkeep.reindex_policy) x
  LEFT JOIN upkeep.job_state j ON j.job_id = x.job_id;
COMMENT ON VIEW upkeep.jobs IS
  'Every policy is a job: what it maintains, its schedule, whether it is enabled, when it next acts, and how its last run went (consecutive_failures > 0 means it is backing off).';

-- Sizes from the files (upkeep.relation_bytes): pg_total_relation_size()
-- locks each partition, its TOAST table and indexes in turn, and so waits
-- behind DDL on any of them.
CREATE VIEW upkeep.partitions AS
SELECT r.job_id,
       r.parent::regclass AS parent,
       c.oid::regclass AS partition,
       r.lower_bound,
       r.upper_bound,
       r.state,
       z.bytes AS size_bytes,
       pg_size_pretty(z.bytes) AS size,
       nullif(c.reltuples, -1)::bigint AS estimated_rows
  FROM upkeep.partition_report() r
  JOIN pg_class c ON c.oid = r.partition::regclass
  CROSS JOIN LATERAL (
    SELECT sum(upkeep.relation_bytes(x.oid))::bigint AS bytes
      FROM (SELECT c.oid
            UNION ALL SELECT c.reltoastrelid WHERE c.reltoastrelid <> 0
            UNION ALL SELECT i.indexrelid FROM pg_index i
                       WHERE i.indrelid = ANY (ARRAY[c.oid, nullif(c.reltoastrelid, 0)])) x(oid)) z;
COMMENT ON VIEW upkeep.partitions IS
  'Every partition of every managed table: bounds (in the policy''s time zone), state (past, current, future, default), size and estimated rows.';
COMMENT ON FUNCTION upkeep.relation_bytes(regclass) IS
  'Bytes on disk of one relation (all its forks; not its indexes or TOAST table), read from its files without opening or locking it, so it never waits behind DDL. 0 for a relation without storage.';

CREATE VIEW upkeep.partition_health AS
SELECT h.job_id, h.parent::regclass AS parent, h.granularity, h.premake, h.partitions,
       h.covered_until, h.future_partitions, h.gaps, h.due, h.archive_due,
       h.default_partition::regclass AS default_partition, h.rows_in_default,
       j.last_run, j.last_status, j.last_error, j.consecutive_failures,
       CASE WHEN NOT j.enabled THEN 'paused' ELSE h.status END AS status,
       CASE WHEN NOT j.enabled THEN format('The job is paused: SELECT upkeep.resume_job(%s);', h.job_id)
            ELSE h.hint END AS hint
  FROM upkeep.partition_health_report() h
  LEFT JOIN upkeep.jobs j ON j.job_id = h.job_id;
COMMENT ON VIEW upkeep.partition_health IS
  'One row per managed table: covered until, future partitions ready, holes, partitions to create (due) or to archive (archive_due), rows sitting in the DEFAULT partition, status (ok, due, gap, archive_due, rows_in_default, paused, error) and a hint.';

COMMENT ON FUNCTION upkeep.manage_partitions(regclass, text, text, integer, interval, text, text, timestamptz) IS
  'Registers or updates the partition policy of a RANGE-partitioned table and creates what is due at once. Returns the partitions created. Example: SELECT upkeep.manage_partitions(''public.nav_history'', ''nav_date'', premake => 3);';
COMMENT ON FUNCTION upkeep.unmanage_partitions(regclass) IS
  'Forgets the partition policy of a table. Touches no table or partition.';
COMMENT ON FUNCTION upkeep.create_partitions(regclass, boolean) IS
  'Creates the partitions that are due (all policies when parent is NULL), one row per action. dry_run => true shows the same actions and SQL without doing them.';
COMMENT ON FUNCTION upkeep.adopt_pg_cron(boolean) IS
  'Takes over pg_cron jobs written by hand, run in the database pg_cron keeps its jobs in: a job that only refreshes materialized views becomes their policies (every from its schedule, only_when_changed on) and is unscheduled in the same transaction; one that runs pg_partman''s maintenance is unscheduled once pg_partman maintains nothing more; a DELETE of old rows is listed with the manage_archive call that keeps them instead, never taken over; jobs of other databases are listed with the calls to run there. One row per job. dry_run => true (the default) takes the same steps and rolls them back.';
COMMENT ON FUNCTION upkeep.adopt_pg_partman(boolean) IS
  'Takes over pg_partman''s time-partitioned parents: for each row of its part_config, the equivalent partition policy (granularity, premake, retention and where it goes, the time zone of its bounds), registered with pg_partman''s automatic_maintenance turned off for that parent; every partition and the default partition stay as they are. What cannot be carried over exactly is not adopted, with why and what to do. One row per parent. dry_run => true (the default) changes nothing. The way back: upkeep.unmanage_partitions(parent) and automatic_maintenance = ''on''.';
COMMENT ON FUNCTION upkeep.run_maintenance(boolean) IS
  'Everything that is due, in the caller''s transaction; one row per action. This is what pg_cron calls.';
COMMENT ON FUNCTION upkeep.partition_report() IS
  'The rows of the view upkeep.partitions, without sizes.';
COMMENT ON FUNCTION upkeep.partition_health_report() IS
  'The rows of the view upkeep.partition_health, without run history.';

-- Name-taking overloads. A regclass argument that names a missing table
-- fails in the cast, before any function runs, with no HINT; these take the
-- name as text, resolve it with the caller's search_path, and say what to do.
CREATE FUNCTION upkeep.table_named(name text) RETURNS regclass
LANGUAGE plpgsql STABLE AS $$
DECLARE
  t regclass;
BEGIN
  IF name IS NULL THEN
    RETURN NULL;
  END IF;
  t := pg_catalog.to_regclass(name);
  IF t IS NULL THEN
    RAISE EXCEPTION 'table "%" does not exist', name
      USING ERRCODE = 'undefined_table',
            HINT = 'Check the name and schema (\dt *.*). Names with capitals, spaces or quotes need double quotes inside the string: ''"My Schema"."Nav History"''.';
  END IF;
  RETURN t;
END
$$;
COMMENT ON FUNCTION upkeep.table_named(text) IS
  'Internal: resolves a table name with the caller''s search_path, or raises an ERROR with a HINT.';

CREATE FUNCTION upkeep.manage_partitions(parent text, control text, granularity text DEFAULT 'month',
    premake integer DEFAULT 3, retention interval DEFAULT NULL, archive text DEFAULT 'archive_table',
    time_zone text DEFAULT 'UTC', start_at timestamptz DEFAULT NULL)
RETURNS SETOF text LANGUAGE sql AS $$
  SELECT upkeep.manage_partitions(upkeep.table_named(parent), control, granularity, premake,
                                  retention, archive, time_zone, start_at)
$$;
COMMENT ON FUNCTION upkeep.manage_partitions(text, text, text, integer, interval, text, text, timestamptz) IS
  'Same as manage_partitions(regclass, ...); a table name that does not resolve gets an ERROR with a HINT.';

CREATE FUNCTION upkeep.unmanage_partitions(parent text) RETURNS void LANGUAGE sql AS $$
  SELECT upkeep.unmanage_partitions(upkeep.table_named(parent))
$$;
COMMENT ON FUNCTION upkeep.unmanage_partitions(text) IS
  'Same as unmanage_partitions(regclass); a table name that does not resolve gets an ERROR with a HINT.';

CREATE FUNCTION upkeep.create_partitions(parent text, dry_run boolean DEFAULT false)
RETURNS TABLE (job_id bigint, action text, target text, status text, detail text, error text, sql text)
LANGUAGE sql AS $$
  SELECT * FROM upkeep.create_partitions(upkeep.table_named(parent), dry_run)
$$;
COMMENT ON FUNCTION upkeep.create_partitions(text, boolean) IS
  'Same as create_partitions(regclass, boolean); a table name that does not resolve gets an ERROR with a HINT.';

COMMENT ON FUNCTION upkeep.alter_job(bigint, interval, boolean) IS
  'Changes a job''s schedule (every: least time between two runs) or enables/disables it. NULL leaves a setting as it is.';
COMMENT ON FUNCTION upkeep.pause_job(bigint) IS 'Stops a job from running by itself; upkeep.run_job() still runs it.';
COMMENT ON FUNCTION upkeep.resume_job(bigint) IS 'Lets a paused job run again, at the next cycle (any back-off is cleared).';
COMMENT ON FUNCTION upkeep.run_job(bigint) IS
  'Runs one job now, in the caller''s transaction, whatever its schedule or back-off; one row per action.';

-- The oldest value of a time column, for upkeep.archive_status: instant
-- with an index on the column (which archiving wants anyway), a scan
-- otherwise. NULL when the table or column is gone.
CREATE FUNCTION upkeep.oldest_value(rel regclass, col text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v timestamptz;
BEGIN
  EXECUTE format('SELECT min(%I)::timestamptz FROM %s', col, rel) INTO v;
  RETURN v;
EXCEPTION WHEN undefined_table OR undefined_column OR cannot_coerce OR insufficient_privilege THEN
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION upkeep.oldest_value(regclass, text) IS
  'Internal: min(col) of a table as timestamptz, for upkeep.archive_status; NULL when the table or column is gone or the caller may not read it.';

-- Rows a row archive holds back: older than the cut-off and still
-- referenced through a foreign key that forbids their deletion (NO ACTION,
-- RESTRICT). NULLs when the caller may not read the tables.
CREATE FUNCTION upkeep.held_back(source regclass, time_column text, cutoff timestamptz,
                                 OUT rows bigint, OUT foreign_keys text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  fk record;
  n bigint;
  any_key text;
BEGIN
  FOR fk IN
    SELECT f.conname, f.conrelid::regclass AS referencing,
           (SELECT string_agg(format('r.%I = s.%I', a.attname, b.attname), ' AND ' ORDER BY k.o)
              FROM unnest(f.conkey, f.confkey) WITH ORDINALITY k(c, p, o)
              JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.c
              JOIN pg_attribute b ON b.attrelid = f.confrelid AND b.attnum = k.p) AS matches
      FROM pg_constraint f
     WHERE f.contype = 'f' AND f.confrelid = source AND f.confdeltype IN ('a', 'r') AND f.conparentid = 0
     ORDER BY f.conname
  LOOP
    EXECUTE format('SELECT count(*) FROM ONLY %s s WHERE s.%I < $1 AND EXISTS (SELECT 1 FROM %s r WHERE %s)',
                   source, time_column, fk.referencing, fk.matches) INTO n USING cutoff;
    IF n > 0 THEN
      foreign_keys := concat_ws(', ', foreign_keys, format('%s by %I of %s', n, fk.conname, fk.referencing));
    END IF;
    any_key := concat_ws(' OR ', any_key, format('EXISTS (SELECT 1 FROM %s r WHERE %s)', fk.referencing, fk.matches));
  END LOOP;
  rows := 0;
  IF any_key IS NOT NULL THEN
    EXECUTE format('SELECT count(*) FROM ONLY %s s WHERE s.%I < $1 AND (%s)', source, time_column, any_key)
      INTO rows USING cutoff;
  END IF;
EXCEPTION WHEN undefined_table OR undefined_column OR insufficient_privilege THEN
  rows := NULL;
  foreign_keys := NULL;
END
$$;
COMMENT ON FUNCTION upkeep.held_back(regclass, text, timestamptz) IS
  'Internal: rows of a row-archived table older than the cut-off that stay because a foreign key (NO ACTION or RESTRICT) still references them, and per key how many; for upkeep.archive_status. NULLs when the caller may not read the tables.';

CREATE VIEW upkeep.archive_status AS
WITH rows_policies AS (
  SELECT a.job_id, a.source, a.enabled, now() - a.older_than AS cutoff,
         coalesce(a.archive_table, format('%I.%I', n.nspname, c.relname || '_archive')) AS archive_name,
         upkeep.oldest_value(a.source, a.time_column) AS oldest_live, hb.rows, hb.foreign_keys
    FROM upkeep.archive_policies a
    LEFT JOIN pg_class c ON c.oid = a.source
    LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN LATERAL upkeep.held_back(a.source, a.time_column, now() - a.older_than) hb ON true
), partition_policies AS (
  SELECT p.job_id, p.parent, p.enabled, p.archive, now() - p.retention AS cutoff,
         CASE WHEN p.archive = 'archive_table' THEN to_regclass(format('%I.%I', n.nspname, c.relname || '_archive')) END
           AS archive_table,
         upkeep.oldest_value(p.parent, p.control) AS oldest_live
    FROM upkeep.partition_policies p
    JOIN pg_class c ON c.oid = p.parent
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE p.retention IS NOT NULL
)
SELECT r.job_id,
       r.source::text AS source,
       'rows'::text AS mode,
       coalesce(to_regclass(r.archive_name)::text, r.archive_name) AS archive,
       r.cutoff,
       coalesce(j.rows_moved, 0) AS rows_archived,
       NULL::bigint AS partitions_archived,
       r.oldest_live,
       j.last_run,
       CASE WHEN NOT r.enabled THEN 'paused'
            WHEN j.last_run IS NULL THEN 'not run yet'
            WHEN j.last_status <> 'ok' THEN j.last_status
            WHEN r.rows > 0 THEN 'held back'
            WHEN r.oldest_live < r.cutoff THEN 'behind'
            ELSE 'ok' END AS status,
       CASE WHEN r.enabled AND j.last_status <> 'ok' THEN j.last_error
            WHEN r.enabled AND r.rows > 0 AND j.last_run IS NOT NULL
              THEN format('%s rows older than the cut-off stay because other tables still reference them (%s); they move once those rows are gone: archive or delete them first.', r.rows, r.foreign_keys)
            WHEN r.enabled AND r.oldest_live < r.cutoff AND j.last_run IS NOT NULL
              THEN 'Rows older than the cut-off remain: rows the application had locked are taken on a later run, or the next run has not come yet (upkeep.jobs.next_run).'
       END AS hint,
       r.rows AS rows_held_back,
       r.foreign_keys AS held_back_by
  FROM rows_policies r
  LEFT JOIN upkeep.job_state j ON j.job_id = r.job_id
UNION ALL
SELECT p.job_id,
       p.parent::text,
       p.archive,
       p.archive_table::text,
       p.cutoff,
       NULL::bigint,
       CASE WHEN p.archive_table IS NOT NULL
            THEN (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = p.archive_table)
            ELSE (SELECT count(*) FROM upkeep.job_runs r
                   WHERE r.job_id = p.job_id AND r.action = 'archive_partition' AND r.status = 'ok') END,
       p.oldest_live,
       j.last_run,
       CASE WHEN NOT p.enabled THEN 'paused'
            WHEN j.last_run IS NULL THEN 'not run yet'
            WHEN j.last_status <> 'ok' THEN j.last_status
            ELSE 'ok' END,
       CASE WHEN p.enabled AND j.last_status <> 'ok' THEN j.last_error END,
       NULL::bigint,
       NULL::text
  FROM partition_policies p
  LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id;
COMMENT ON VIEW upkeep.archive_status IS
  'Per archived table: where old data goes, the cut-off, how much has moved, the oldest row still live, the last run, a status (ok, behind, held back, paused, failed, lock_timeout, not run yet) with a hint, and the rows foreign keys hold back.';
COMMENT ON COLUMN upkeep.archive_status.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.archive_status.source IS 'The live table.';
COMMENT ON COLUMN upkeep.archive_status.mode IS 'rows (a plain table''s rows move in batches), or the partition policy''s archive mode.';
COMMENT ON COLUMN upkeep.archive_status.archive IS 'The archive table; NULL for partition modes that keep no table (schema:, tablespace:, detach, drop).';
COMMENT ON COLUMN upkeep.archive_status.cutoff IS 'Now minus older_than (rows) or retention (partitions): older data leaves.';
COMMENT ON COLUMN upkeep.archive_status.rows_archived IS 'Rows moved by this job in all (row archiving).';
COMMENT ON COLUMN upkeep.archive_status.partitions_archived IS 'Partitions in the archive table, or (other modes) moves in the run log''s history.';
COMMENT ON COLUMN upkeep.archive_status.oldest_live IS 'The oldest value of the time column still in the live table (a scan unless the column is indexed).';
COMMENT ON COLUMN upkeep.archive_status.last_run IS 'When the job last ran.';
COMMENT ON COLUMN upkeep.archive_status.status IS 'ok, behind (old rows remain), held back (old rows other tables still reference stay), paused, failed, lock_timeout or not run yet.';
COMMENT ON COLUMN upkeep.archive_status.hint IS 'What to look at when the status is not ok.';
COMMENT ON COLUMN upkeep.archive_status.rows_held_back IS 'Rows older than the cut-off that stay because a foreign key (NO ACTION or RESTRICT) of another table still references them (row archiving; NULL if you may not read the tables).';
COMMENT ON COLUMN upkeep.archive_status.held_back_by IS 'Which foreign keys hold them back, with how many rows each.';

CREATE FUNCTION upkeep.manage_archive(source text, time_column text, older_than interval,
    archive_table text DEFAULT NULL, batch_size integer DEFAULT 10000)
RETURNS bigint LANGUAGE sql AS $$
  SELECT upkeep.manage_archive(upkeep.table_named(source), time_column, older_than, archive_table, batch_size)
$$;
COMMENT ON FUNCTION upkeep.manage_archive(text, text, interval, text, integer) IS
  'Same as manage_archive(regclass, ...); a table name that does not resolve gets an ERROR with a HINT.';

CREATE FUNCTION upkeep.unmanage_archive(source text) RETURNS void LANGUAGE sql AS $$
  SELECT upkeep.unmanage_archive(upkeep.table_named(source))
$$;
COMMENT ON FUNCTION upkeep.unmanage_archive(text) IS
  'Same as unmanage_archive(regclass); a table name that does not resolve gets an ERROR with a HINT.';

CREATE FUNCTION upkeep.archive(source text, dry_run boolean DEFAULT false)
RETURNS TABLE (job_id bigint, action text, target text, status text, rows_moved bigint, detail text, error text, sql text)
LANGUAGE sql AS $$
  SELECT * FROM upkeep.archive(upkeep.table_named(source), dry_run)
$$;
COMMENT ON FUNCTION upkeep.archive(text, boolean) IS
  'Same as archive(regclass, boolean); a table name that does not resolve gets an ERROR with a HINT.';
COMMENT ON FUNCTION upkeep.manage_archive(regclass, text, interval, text, integer) IS
  'Registers (or updates) the row archive policy of a plain table: rows whose time_column is older than older_than move into archive_table (default <source>_archive, created LIKE the source) in batches of batch_size, each one atomic statement. Returns the job id; moves nothing by itself.';
COMMENT ON FUNCTION upkeep.unmanage_archive(regclass) IS
  'Forgets the row archive policy of a table. Moves and drops nothing.';
COMMENT ON FUNCTION upkeep.archive(regclass, boolean) IS
  'Runs the archive moves that are due (of one table, now, when given), in the caller''s transaction; one row per action with the rows moved. dry_run shows the statements without running them.';

-- Column comments for what DBAs and dashboards read.
COMMENT ON SEQUENCE upkeep.job_runs_run_id_seq IS 'Numbers the rows of upkeep.job_runs.';
COMMENT ON COLUMN upkeep.job_runs.run_id IS 'Order of the records.';
COMMENT ON COLUMN upkeep.job_runs.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.job_runs.target IS 'The object acted on, e.g. the partition created.';
COMMENT ON COLUMN upkeep.job_runs.started_at IS 'When the action started.';
COMMENT ON COLUMN upkeep.job_runs.duration IS 'How long it took.';
COMMENT ON COLUMN upkeep.job_runs.detail IS 'What it was about (a range, rows moved from DEFAULT, ...).';
COMMENT ON COLUMN upkeep.job_runs.error IS 'Why it failed, with the HINT when there was one.';
COMMENT ON COLUMN upkeep.job_state.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.job_state.last_run IS 'When the job last ran.';
COMMENT ON COLUMN upkeep.job_state.last_status IS 'ok, failed or lock_timeout.';
COMMENT ON COLUMN upkeep.job_state.last_error IS 'The first error of the last run.';
COMMENT ON COLUMN upkeep.job_state.last_duration IS 'Time its actions took in the last run.';
COMMENT ON COLUMN upkeep.job_state.consecutive_failures IS 'Failed runs in a row; 0 after a success.';
COMMENT ON COLUMN upkeep.job_state.next_run IS 'Not before this: its schedule (every) or back-off; NULL: any cycle.';
COMMENT ON COLUMN upkeep.job_state.last_success IS 'When a run of the job last succeeded.';
COMMENT ON COLUMN upkeep.job_state.rows_moved IS 'Rows an archive job has moved in all, counted in the transaction of each batch.';
COMMENT ON COLUMN upkeep.unfinished_actions.target IS 'The object the action works on (a partition being moved out).';
COMMENT ON COLUMN upkeep.unfinished_actions.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.unfinished_actions.action IS 'The kind of action, as in upkeep.job_runs.action.';
COMMENT ON COLUMN upkeep.unfinished_actions.steps IS 'The statements still to run, as the table''s owner, in one transaction.';
COMMENT ON COLUMN upkeep.unfinished_actions.started_at IS 'When the worker began the action.';
COMMENT ON COLUMN upkeep.partition_state.job_id IS 'The partition job.';
COMMENT ON COLUMN upkeep.partition_state.due_at IS 'When a partition must next be created or archived; NULL: never.';
COMMENT ON COLUMN upkeep.partition_state.fingerprint IS 'Hash of the policy and catalog rows the last check read.';
COMMENT ON COLUMN upkeep.partition_state.checked_at IS 'When the last full check ran.';
COMMENT ON COLUMN upkeep.partition_policies.job_id IS 'The job this policy is (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.partition_policies.created_at IS 'When the policy was registered.';
COMMENT ON COLUMN upkeep.archive_policies.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.archive_policies.created_at IS 'When the policy was registered.';
COMMENT ON COLUMN upkeep.archive_policies.updated_at IS 'When manage_archive or alter_job last changed it.';
COMMENT ON COLUMN upkeep.partition_policies.updated_at IS 'When manage_partitions or alter_job last changed it.';
COMMENT ON COLUMN upkeep.jobs.job_id IS 'Identifies the job in alter_job, pause_job, resume_job, run_job.';
COMMENT ON COLUMN upkeep.jobs.kind IS 'What the job maintains: partitions, archive, matview, index_snapshot or reindex.';
COMMENT ON COLUMN upkeep.jobs.target IS 'The table it serves.';
COMMENT ON COLUMN upkeep.jobs.schedule IS 'every naptime, or the least time between runs set with alter_job.';
COMMENT ON COLUMN upkeep.jobs.enabled IS 'false: paused (pause_job).';
COMMENT ON COLUMN upkeep.jobs.next_run IS 'When it next acts: the next partition due, or the end of a back-off.';
COMMENT ON COLUMN upkeep.jobs.last_run IS 'When it last ran.';
COMMENT ON COLUMN upkeep.jobs.last_status IS 'ok, failed or lock_timeout.';
COMMENT ON COLUMN upkeep.jobs.last_error IS 'Why the last run failed.';
COMMENT ON COLUMN upkeep.jobs.consecutive_failures IS 'Failed runs in a row; above 0 the job is backing off.';
COMMENT ON COLUMN upkeep.jobs.last_duration IS 'Time its actions took in the last run.';
COMMENT ON COLUMN upkeep.partitions.job_id IS 'The partition job.';
COMMENT ON COLUMN upkeep.partitions.parent IS 'The managed table.';
COMMENT ON COLUMN upkeep.partitions.partition IS 'One of its partitions.';
COMMENT ON COLUMN upkeep.partitions.lower_bound IS 'Inclusive lower bound, in the policy''s time zone.';
COMMENT ON COLUMN upkeep.partitions.upper_bound IS 'Exclusive upper bound, in the policy''s time zone.';
COMMENT ON COLUMN upkeep.partitions.state IS 'past, current, future or default.';
COMMENT ON COLUMN upkeep.partitions.size_bytes IS
  'Bytes on disk of the partition with its TOAST table and indexes, read from the files: no lock taken, no wait behind DDL.';
COMMENT ON COLUMN upkeep.partitions.size IS 'size_bytes for people.';
COMMENT ON COLUMN upkeep.partitions.estimated_rows IS 'Row estimate from the last ANALYZE; NULL before one.';
COMMENT ON COLUMN upkeep.partition_health.job_id IS 'The partition job.';
COMMENT ON COLUMN upkeep.partition_health.parent IS 'The managed table.';
COMMENT ON COLUMN upkeep.partition_health.granularity IS 'Period of one partition.';
COMMENT ON COLUMN upkeep.partition_health.premake IS 'Future periods to keep ready.';
COMMENT ON COLUMN upkeep.partition_health.partitions IS 'Partitions with bounds (DEFAULT not counted).';
COMMENT ON COLUMN upkeep.partition_health.covered_until IS 'End of the unbroken run of partitions that covers now; NULL: now is not covered.';
COMMENT ON COLUMN upkeep.partition_health.future_partitions IS 'Partitions starting at or after the next period.';
COMMENT ON COLUMN upkeep.partition_health.gaps IS 'Holes between partitions.';
COMMENT ON COLUMN upkeep.partition_health.due IS 'Ranges a maintenance run would create now.';
COMMENT ON COLUMN upkeep.partition_health.archive_due IS 'Partitions a maintenance run would archive now.';
COMMENT ON COLUMN upkeep.partition_health.default_partition IS 'The DEFAULT partition, if any.';
COMMENT ON COLUMN upkeep.partition_health.rows_in_default IS 'Rows sitting in DEFAULT (counted exactly).';
COMMENT ON COLUMN upkeep.partition_health.last_run IS 'When the job last ran.';
COMMENT ON COLUMN upkeep.partition_health.last_status IS 'ok, failed or lock_timeout.';
COMMENT ON COLUMN upkeep.partition_health.last_error IS 'Why the last run failed.';
COMMENT ON COLUMN upkeep.partition_health.consecutive_failures IS 'Failed runs in a row.';
COMMENT ON COLUMN upkeep.partition_health.status IS 'ok, due, gap, archive_due, rows_in_default, paused or error.';
COMMENT ON COLUMN upkeep.partition_health.hint IS 'What to do about the status.';

-- Materialized views.

-- Change tracking (see src/matviews/changes.rs). Every writer of a tracked
-- table runs the trigger function, so it runs as pg_upkeep's owner with a
-- pinned search_path, and records nothing but the fact of the change.
CREATE FUNCTION upkeep.track_changes() RETURNS trigger
LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'track_changes_wrapper';
COMMENT ON FUNCTION upkeep.track_changes() IS
  'Trigger function of upkeep_track_changes (statement level, after INSERT, UPDATE, DELETE, TRUNCATE): records in upkeep.changes that the table changed in this transaction, once per transaction. Put on the tables that views refreshed only when changed read.';

-- Materialized views have no triggers; their refreshes (by anyone) are
-- recorded by this event trigger, in the refreshing transaction.
CREATE FUNCTION upkeep.track_refreshes() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  INSERT INTO upkeep.changes (relid, slot, xid, cid)
  SELECT c.objid, -nextval('upkeep.change_slots')::int4, pg_current_xact_id(), upkeep.command_id()
    FROM pg_event_trigger_ddl_commands() c
   WHERE c.classid = 'pg_catalog.pg_class'::regclass
     AND upkeep.read_by_managed_view(c.objid);
END
$$;
COMMENT ON FUNCTION upkeep.track_refreshes() IS
  'Event trigger function of upkeep_track_refreshes: records in upkeep.changes that a materialized view a managed view reads was refreshed.';
CREATE EVENT TRIGGER upkeep_track_refreshes ON ddl_command_end
  WHEN TAG IN ('REFRESH MATERIALIZED VIEW') EXECUTE FUNCTION upkeep.track_refreshes();
COMMENT ON EVENT TRIGGER upkeep_track_refreshes IS
  'Records refreshes of materialized views that managed views read, so that those are refreshed after them (only_when_changed).';

CREATE VIEW upkeep.matview_status AS
SELECT m.job_id,
       m.matview,
       m.every,
       m.concurrent,
       m.only_when_changed,
       s.refreshed_at AS last_refresh,
       s.duration AS last_duration,
       r.changed_since,
       r.changed,
       CASE WHEN m.enabled THEN coalesce(j.next_run, now()) END AS next_due,
       r.concurrently_possible,
       r.populated,
       CASE WHEN NOT m.enabled THEN 'paused'
            WHEN r.status IN ('dropped', 'cannot refresh concurrently') THEN r.status
            WHEN j.last_status IN ('failed', 'lock_timeout') THEN j.last_status
            ELSE r.status END AS status,
       CASE WHEN NOT m.enabled THEN format('The job is paused: SELECT upkeep.resume_job(%s);', m.job_id)
            WHEN r.status IN ('dropped', 'cannot refresh concurrently') THEN r.hint
            WHEN j.last_status IN ('failed', 'lock_timeout') THEN j.last_error
            WHEN r.hint IS NOT NULL THEN r.hint
            WHEN cardinality(r.unsure) > 0 THEN 'Refreshed whenever due, because: ' || array_to_string(r.unsure, '; ')
            END AS hint
  FROM upkeep.matview_policies m
  JOIN upkeep.matview_report() r ON r.job_id = m.job_id
  LEFT JOIN upkeep.matview_state s ON s.job_id = m.job_id
  LEFT JOIN upkeep.job_state j ON j.job_id = m.job_id;
COMMENT ON VIEW upkeep.matview_status IS
  'One row per managed materialized view: last refresh and its duration, whether what it reads changed since, next due, whether CONCURRENTLY is possible, status (ok, changed, not refreshed yet, not populated, cannot refresh concurrently, dropped, paused, failed, lock_timeout) and a hint.';
COMMENT ON COLUMN upkeep.matview_status.job_id IS 'The matview job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.matview_status.matview IS 'The materialized view.';
COMMENT ON COLUMN upkeep.matview_status.every IS 'Least time between two refreshes or checks.';
COMMENT ON COLUMN upkeep.matview_status.concurrent IS 'Refreshed CONCURRENTLY (readers never blocked).';
COMMENT ON COLUMN upkeep.matview_status.only_when_changed IS 'Skipped when nothing it reads changed.';
COMMENT ON COLUMN upkeep.matview_status.last_refresh IS 'When pg_upkeep last refreshed it.';
COMMENT ON COLUMN upkeep.matview_status.last_duration IS 'How long that refresh took.';
COMMENT ON COLUMN upkeep.matview_status.changed_since IS 'Whether a table it reads changed since the last refresh; NULL when that cannot be seen (see hint).';
COMMENT ON COLUMN upkeep.matview_status.changed IS 'The relations that changed since the last refresh.';
COMMENT ON COLUMN upkeep.matview_status.next_due IS 'When it is next refreshed or checked.';
COMMENT ON COLUMN upkeep.matview_status.concurrently_possible IS 'It has a unique index REFRESH ... CONCURRENTLY can use.';
COMMENT ON COLUMN upkeep.matview_status.populated IS 'It has data (a view created WITH NO DATA has none until its first refresh).';
COMMENT ON COLUMN upkeep.matview_status.status IS 'ok, changed, not refreshed yet, not populated, cannot refresh concurrently, dropped, paused, failed or lock_timeout.';
COMMENT ON COLUMN upkeep.matview_status.hint IS 'What to do about the status, or why it is refreshed whenever due.';

COMMENT ON FUNCTION upkeep.manage_matview(regclass, interval, boolean, boolean) IS
  'Registers (or updates) the policy of a materialized view: refreshed every `every`, CONCURRENTLY (needs a unique index), and only when a table it reads changed. Returns the job id. Example: SELECT upkeep.manage_matview(''public.fund_analytics_mv'', ''1 hour'');';
COMMENT ON FUNCTION upkeep.unmanage_matview(regclass) IS
  'Forgets the policy of a materialized view (also of one that was dropped, by OID). Refreshes and drops nothing.';
COMMENT ON FUNCTION upkeep.refresh_matviews(regclass, boolean) IS
  'Refreshes the managed views that are due (or one, now), in dependency order, in the caller''s transaction; one row per view: refreshed, or skipped and why. force => true refreshes even when nothing changed.';
COMMENT ON FUNCTION upkeep.command_id() IS
  'Internal: the current command of this transaction (change tracking tells the changes a transaction makes after its own refresh by it).';
COMMENT ON FUNCTION upkeep.matview_report() IS
  'The rows of the view upkeep.matview_status, without run history.';

CREATE FUNCTION upkeep.manage_matview(matview text, every interval DEFAULT '1 hour',
    concurrently boolean DEFAULT true, only_when_changed boolean DEFAULT true)
RETURNS bigint LANGUAGE sql AS $$
  SELECT upkeep.manage_matview(upkeep.table_named($1), $2, $3, $4)
$$;
COMMENT ON FUNCTION upkeep.manage_matview(text, interval, boolean, boolean) IS
  'Same as manage_matview(regclass, ...); a name that does not resolve gets an ERROR with a HINT.';

CREATE FUNCTION upkeep.unmanage_matview(matview text) RETURNS void LANGUAGE sql AS $$
  SELECT upkeep.unmanage_matview(upkeep.table_named(matview))
$$;
COMMENT ON FUNCTION upkeep.unmanage_matview(text) IS
  'Same as unmanage_matview(regclass); a name that does not resolve gets an ERROR with a HINT.';

CREATE FUNCTION upkeep.refresh_matviews(matview text, force boolean DEFAULT false)
RETURNS TABLE (job_id bigint, matview text, status text, reason text, seconds double precision, error text, sql text)
LANGUAGE sql AS $$
  SELECT * FROM upkeep.refresh_matviews(upkeep.table_named(matview), force)
$$;
COMMENT ON FUNCTION upkeep.refresh_matviews(text, boolean) IS
  'Same as refresh_matviews(regclass, boolean); a name that does not resolve gets an ERROR with a HINT.';

-- Index health.
CREATE VIEW upkeep.index_health AS
SELECT * FROM upkeep.index_health_report(0);
COMMENT ON VIEW upkeep.index_health IS
  'One row per index problem: unused, duplicate, redundant, invalid, bloated (estimated from statistics), unindexed_fk; with size, scans, estimated bloat, a recommendation in plain words and the fix_sql that fixes it (run its statements one by one, outside a transaction block: they use CONCURRENTLY).';
COMMENT ON COLUMN upkeep.index_health.schema IS 'Schema of the table.';
COMMENT ON COLUMN upkeep.index_health."table" IS 'The table.';
COMMENT ON COLUMN upkeep.index_health.index IS 'The index; NULL for a missing index (unindexed_fk).';
COMMENT ON COLUMN upkeep.index_health.problem IS 'unused, duplicate, redundant, invalid, bloated or unindexed_fk.';
COMMENT ON COLUMN upkeep.index_health.severity IS 'high, medium or low: by the bytes at stake (invalid: high; unindexed_fk: medium).';
COMMENT ON COLUMN upkeep.index_health.size_bytes IS 'Size of the index (of all its partitions'' indexes for a partitioned one).';
COMMENT ON COLUMN upkeep.index_health.scans IS 'Index scans since statistics were last reset.';
COMMENT ON COLUMN upkeep.index_health.bloat_bytes IS 'Estimated bytes a fresh build would not need (bloated only).';
COMMENT ON COLUMN upkeep.index_health.bloat_ratio IS 'Size against the estimated size of a fresh build (bloated only; 2.0 = twice as big).';
COMMENT ON COLUMN upkeep.index_health.recommendation IS 'What is wrong and what to do, in plain words.';
COMMENT ON COLUMN upkeep.index_health.fix_sql IS 'The statements that fix it, quoted; run them one by one outside a transaction block.';
COMMENT ON FUNCTION upkeep.index_health_report(bigint) IS
  'The rows of upkeep.index_health, for indexes of at least min_size_bytes (missing indexes always). Reads catalogs and statistics only, never an index.';
COMMENT ON FUNCTION upkeep.index_bloat_exact(regclass) IS
  'Exact size, leaf density and bloat of one btree index, from pgstattuple''s pgstatindex() (needs CREATE EXTENSION pgstattuple; reads the whole index).';

CREATE VIEW upkeep.index_growth AS
SELECT schema, "table", index, day, size_bytes,
       size_bytes - lag(size_bytes) OVER w AS growth_bytes,
       scans - lag(scans) OVER w AS scans,
       bloat_bytes
  FROM (SELECT DISTINCT ON (schema, index, captured_at::date)
               schema, "table", index, captured_at::date AS day, size_bytes, scans, bloat_bytes
          FROM upkeep.index_health_history
         WHERE captured_at >= current_date - 31
         ORDER BY schema, index, captured_at::date, captured_at DESC) d
WINDOW w AS (PARTITION BY schema, index ORDER BY day);
COMMENT ON VIEW upkeep.index_growth IS
  'Per index and day of the last 30 days (from upkeep.index_health_history, the last snapshot of each day): size, growth since the day before, scans that day, estimated bloat. For dashboards.';
COMMENT ON COLUMN upkeep.index_growth.schema IS 'Schema of the index.';
COMMENT ON COLUMN upkeep.index_growth."table" IS 'Its table.';
COMMENT ON COLUMN upkeep.index_growth.index IS 'The index.';
COMMENT ON COLUMN upkeep.index_growth.day IS 'The day of the snapshot.';
COMMENT ON COLUMN upkeep.index_growth.size_bytes IS 'Its size that day.';
COMMENT ON COLUMN upkeep.index_growth.growth_bytes IS 'Bytes grown since the previous snapshot day (NULL for the first).';
COMMENT ON COLUMN upkeep.index_growth.scans IS 'Scans since the previous snapshot day (negative after a statistics reset).';
COMMENT ON COLUMN upkeep.index_growth.bloat_bytes IS 'Estimated bloat that day.';
COMMENT ON FUNCTION upkeep.snapshot_index_health() IS
  'Appends every index''s size, scans and estimated bloat to upkeep.index_health_history (rows older than 13 months go) and notes in upkeep.index_watch which indexes it saw without scans, the evidence behind "unused"; returns the number of indexes recorded. The workers run it daily (job kind index_snapshot).';
COMMENT ON FUNCTION upkeep.index_health_figures() IS
  'Internal: the current figures of every index, as snapshot_index_health() records them.';
COMMENT ON FUNCTION upkeep.manage_reindex(double precision, bigint, text) IS
  'Turns on (or changes) automatic reindex: the workers rebuild, one index per run with REINDEX INDEX CONCURRENTLY, btree indexes of at least min_size_bytes whose estimated size is at least min_bloat_ratio times a fresh build''s, inside maintenance_window (HH:MM-HH:MM, server time) when given; they first drop invalid leftovers of interrupted concurrent rebuilds. Off unless called. Returns the job id.';
COMMENT ON FUNCTION upkeep.unmanage_reindex() IS 'Turns automatic reindex off.';

-- Metrics for dashboards (Prometheus names; upkeep.prometheus() renders them).
-- A function with a pinned search_path under the view, so that the names in
-- the labels are always schema-qualified, whoever reads them.
CREATE FUNCTION upkeep.metrics_rows()
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
-- Each source is read once: the partition report costs a catalog read of
-- every partition, the jobs view one of every policy.
WITH j AS MATERIALIZED (
       SELECT j.job_id, j.kind, j.target, j.last_duration, j.consecutive_failures, s.last_success,
              coalesce(e.every, nullif(current_setting('upkeep.naptime', true), '')::interval) AS every,
              jsonb_build_object('job_id', j.job_id::text, 'kind', j.kind, 'target', j.target) AS labels
         FROM upkeep.jobs j LEFT JOIN upkeep.job_state s ON s.job_id = j.job_id
         LEFT JOIN (SELECT job_id, every FROM upkeep.partition_policies
                    UNION ALL SELECT job_id, every FROM upkeep.archive_policies
                    UNION ALL SELECT job_id, every FROM upkeep.matview_policies
                    UNION ALL SELECT job_id, every FROM upkeep.index_snapshot_policy
                    UNION ALL SELECT job_id, every FROM upkeep.reindex_policy) e ON e.job_id = j.job_id),
     h AS MATERIALIZED (SELECT parent, future_partitions, rows_in_default FROM upkeep.partition_health)
SELECT 'upkeep_job_last_success_timestamp_seconds'::text AS metric, j.labels,
       extract(epoch FROM j.last_success)::float8 AS value
  FROM j WHERE j.last_success IS NOT NULL
UNION ALL
SELECT 'upkeep_job_last_duration_seconds', j.labels, extract(epoch FROM j.last_duration)::float8
  FROM j WHERE j.last_duration IS NOT NULL
UNION ALL
SELECT 'upkeep_job_consecutive_failures', j.labels, j.consecutive_failures::float8
  FROM j
UNION ALL
SELECT 'upkeep_job_interval_seconds', j.labels, extract(epoch FROM j.every)::float8
  FROM j WHERE j.every IS NOT NULL
UNION ALL
SELECT 'upkeep_partitions_future', jsonb_build_object('parent', h.parent::text), h.future_partitions::float8
  FROM h
UNION ALL
SELECT 'upkeep_partition_default_rows', jsonb_build_object('parent', h.parent::text), h.rows_in_default::float8
  FROM h WHERE h.rows_in_default IS NOT NULL
UNION ALL
SELECT 'upkeep_archive_rows_total', jsonb_build_object('source', a.source::text), coalesce(s.rows_moved, 0)::float8
  FROM upkeep.archive_policies a LEFT JOIN upkeep.job_state s ON s.job_id = a.job_id
UNION ALL
SELECT 'upkeep_matview_seconds_since_refresh', jsonb_build_object('matview', m.matview::text),
       extract(epoch FROM now() - s.refreshed_at)::float8
  FROM upkeep.matview_policies m JOIN upkeep.matview_state s ON s.job_id = m.job_id
UNION ALL
-- Stale: what it reads changed (or cannot be seen) since its last refresh.
SELECT 'upkeep_matview_stale_seconds', jsonb_build_object('matview', v.matview::text),
       CASE WHEN v.changed_since IS FALSE THEN 0 ELSE extract(epoch FROM now() - v.last_refresh)::float8 END
  FROM upkeep.matview_status v WHERE v.last_refresh IS NOT NULL
UNION ALL
-- Row archives only: partitions leave whole, so rows up to a period
-- older than the cut-off stay by design.
SELECT 'upkeep_archive_behind_seconds', jsonb_build_object('source', a.source::text),
       greatest(0, extract(epoch FROM now() - a.older_than - o.oldest))::float8
  FROM upkeep.archive_policies a CROSS JOIN LATERAL upkeep.oldest_value(a.source, a.time_column) o(oldest)
 WHERE a.enabled AND o.oldest IS NOT NULL
UNION ALL
SELECT m.metric, CASE WHEN m.problem IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('problem', m.problem) END, m.value
  FROM upkeep.index_metrics() m
UNION ALL
SELECT 'upkeep_scheduler_wait_seconds', '{}'::jsonb, w
  FROM upkeep.scheduler_wait_seconds() w WHERE w IS NOT NULL
$$;
COMMENT ON FUNCTION upkeep.metrics_rows() IS 'Internal: the rows of upkeep.metrics.';
COMMENT ON FUNCTION upkeep.index_metrics() IS
  'Internal: the index rows of upkeep.metrics (problems by kind, estimated bloat of all indexes) from one read of the index catalogs.';
COMMENT ON FUNCTION upkeep.scheduler_wait_seconds() IS
  'Seconds this database''s scheduler has been waiting for its turn past its due time (the launcher runs at most upkeep.max_schedulers at once, longest-waiting first); 0 when on time, NULL without the workers (no shared_preload_libraries).';
CREATE VIEW upkeep.metrics AS SELECT * FROM upkeep.metrics_rows();
COMMENT ON VIEW upkeep.metrics IS
  'Figures for dashboards, one row per sample: per job last success time, last duration, consecutive failures; per managed table future partitions and rows in DEFAULT; per archive source rows archived; per view seconds since refresh and since what it reads changed unrefreshed; per row archive how far its oldest row is past the cut-off; per job its interval; index problems by kind; total estimated index bloat; how long this database''s scheduler has waited for its turn. upkeep.prometheus() renders it for Prometheus.';
COMMENT ON COLUMN upkeep.metrics.metric IS 'The metric''s name (Prometheus style, upkeep_...).';
COMMENT ON COLUMN upkeep.metrics.labels IS 'What the sample is about, as labels (job_id, kind, target, parent, source, matview, problem).';
COMMENT ON COLUMN upkeep.metrics.value IS 'The value.';
COMMENT ON FUNCTION upkeep.prometheus() IS
  'upkeep.metrics in Prometheus'' text exposition format (# HELP, # TYPE, samples with escaped labels).';

COMMENT ON FUNCTION upkeep.version() IS
  'The version of pg_upkeep''s SQL objects in this database and of the library the server loaded; up_to_date is false after a package upgrade until ALTER EXTENSION pg_upkeep UPDATE.';

COMMENT ON FUNCTION upkeep.report_html() IS
  'One self-contained HTML page (no script, nothing from the network): jobs, a partition calendar per managed table, archive and refresh status, index health, with inline SVG charts. Save it and open it: psql -Atc "SELECT upkeep.report_html()" > report.html';

-- Who may see and change what. The rule: a policy is registered only by the
-- owner of the table (or a superuser). Everyone may read pg_upkeep's tables
-- and views, as everyone may read pg_class and the statistics views. Any
-- role may write them (through the functions, or directly), but a trigger
-- checks every written row: only the manager of the job may write it. No
-- row-level security: it would make pg_dump by non-superusers fail on the
-- policy tables that pg_dump carries.
-- The helpers qualify every name and operator, so that no search_path can
-- change what they check; they are inlined into the queries that scope runs.
CREATE FUNCTION upkeep.may_manage_database() RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT pg_catalog.pg_has_role(d.datdba, 'USAGE') FROM pg_catalog.pg_database d
   WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
$$;
COMMENT ON FUNCTION upkeep.may_manage_database() IS
  'Whether the current role may manage this database''s index-health jobs: a member of the database owner''s role, or a superuser.';

CREATE FUNCTION upkeep.may_manage(rel oid) RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT coalesce((SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) rel),
                  upkeep.may_manage_database())
$$;
COMMENT ON FUNCTION upkeep.may_manage(oid) IS
  'Whether the current role may manage pg_upkeep policies of the relation: a member of its owner''s role, or a superuser; for a relation that no longer exists, the database owner.';

CREATE FUNCTION upkeep.may_manage_job(job bigint) RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    (SELECT upkeep.may_manage(s.served)
       FROM (SELECT p.parent::oid AS served FROM upkeep.partition_policies p WHERE p.job_id OPERATOR(pg_catalog.=) job
             UNION ALL SELECT a.source::oid FROM upkeep.archive_policies a WHERE a.job_id OPERATOR(pg_catalog.=) job
             UNION ALL SELECT m.matview::oid FROM upkeep.matview_policies m WHERE m.job_id OPERATOR(pg_catalog.=) job) s
      LIMIT 1),
    upkeep.may_manage_database())
$$;
COMMENT ON FUNCTION upkeep.may_manage_job(bigint) IS
  'Whether the current role may manage the job: the manager of the table it serves; for the index-health jobs (and jobs that no longer exist), the database owner.';

CREATE FUNCTION upkeep.check_manager() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  side text;
  r jsonb;
  rel oid;
  what text;
  ok boolean;
BEGIN
  -- Superusers may manage everything, and never get here: the triggers
  -- fire WHEN NOT upkeep.caller_is_superuser().
  -- The old row (it may be changed or removed) and the new one (it may be written).
  FOREACH side IN ARRAY ARRAY['old', 'new'] LOOP
    CONTINUE WHEN (side = 'old' AND TG_OP = 'INSERT') OR (side = 'new' AND TG_OP = 'DELETE');
    r := CASE side WHEN 'old' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    CASE TG_ARGV[0]
      WHEN 'database' THEN
        ok := upkeep.may_manage_database();
        what := 'the index-health jobs of database ' || quote_ident(current_database());
      WHEN 'job_id' THEN
        ok := upkeep.may_manage_job((r->>'job_id')::int8)
              -- rows of a job that no longer exists are nobody's: anyone may remove them
              OR (TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM upkeep.jobs j WHERE j.job_id = (r->>'job_id')::int8));
        what := 'job ' || (r->>'job_id');
      ELSE
        -- The OID itself: the text of a regclass names a dropped table by number.
        IF side = 'old' THEN
          EXECUTE format('SELECT ($1).%I::oid', TG_ARGV[0]) INTO rel USING OLD;
        ELSE
          EXECUTE format('SELECT ($1).%I::oid', TG_ARGV[0]) INTO rel USING NEW;
        END IF;
        ok := upkeep.may_manage(rel);
        what := 'table ' || rel::regclass::text;
    END CASE;
    IF NOT ok THEN
      RAISE EXCEPTION 'permission denied to change upkeep.% for %', TG_TABLE_NAME, what
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only the owner of the table a job serves (or a member of the owning role), the database owner for the index-health jobs, or a superuser may change it. Use the upkeep functions as that role.';
    END IF;
  END LOOP;
  RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
COMMENT ON FUNCTION upkeep.check_manager() IS
  'Trigger function of upkeep_check_manager on pg_upkeep''s tables: refuses a written row unless the current role may manage its job (upkeep.may_manage_job), table (upkeep.may_manage) or database (upkeep.may_manage_database). Superusers may manage everything: the triggers do not fire for them.';
COMMENT ON FUNCTION upkeep.caller_is_superuser() IS
  'Internal: whether the current role is a superuser (the WHEN of the upkeep_check_manager triggers).';

CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.partition_policies
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('parent');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.archive_policies
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('source');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.matview_policies
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('matview');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.index_snapshot_policy
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.reindex_policy
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.index_health_history
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.index_watch
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.job_state
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.job_runs
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.partition_state
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.matview_state
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.unfinished_actions
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('job_id');

-- A committed policy change wakes the workers' launcher, so that a policy
-- registered or changed by a plain INSERT or UPDATE is acted on within a
-- naptime although the launcher visits a database with nothing due only
-- hourly.
CREATE TRIGGER upkeep_wake_workers AFTER INSERT OR UPDATE ON upkeep.partition_policies
  FOR EACH ROW EXECUTE FUNCTION upkeep.wake_workers();
CREATE TRIGGER upkeep_wake_workers AFTER INSERT OR UPDATE ON upkeep.archive_policies
  FOR EACH ROW EXECUTE FUNCTION upkeep.wake_workers();
CREATE TRIGGER upkeep_wake_workers AFTER INSERT OR UPDATE ON upkeep.matview_policies
  FOR EACH ROW EXECUTE FUNCTION upkeep.wake_workers();
CREATE TRIGGER upkeep_wake_workers AFTER INSERT OR UPDATE ON upkeep.index_snapshot_policy
  FOR EACH ROW EXECUTE FUNCTION upkeep.wake_workers();
CREATE TRIGGER upkeep_wake_workers AFTER INSERT OR UPDATE ON upkeep.reindex_policy
  FOR EACH ROW EXECUTE FUNCTION upkeep.wake_workers();
COMMENT ON FUNCTION upkeep.wake_workers() IS
  'Trigger function of upkeep_wake_workers on the policy tables: when the transaction that registered or changed a policy commits, the launcher starts a scheduler for this database within upkeep.naptime.';
-- A database the launcher saw without the extension is otherwise visited
-- only hourly: this wakes it for the first index health snapshot.
UPDATE upkeep.index_snapshot_policy SET enabled = enabled;

GRANT USAGE ON SCHEMA upkeep TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA upkeep TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON upkeep.partition_policies, upkeep.archive_policies, upkeep.matview_policies,
  upkeep.index_snapshot_policy, upkeep.reindex_policy, upkeep.index_health_history, upkeep.index_watch,
  upkeep.job_state, upkeep.job_runs, upkeep.partition_state, upkeep.matview_state, upkeep.unfinished_actions TO PUBLIC;
GRANT USAGE ON SEQUENCE upkeep.job_id_seq TO PUBLIC;
