-- pg_upkeep 0.3.0 -> 0.4.0: index health calls an index unused only on
-- evidence: what the snapshots saw of it (upkeep.index_watch). Row
-- archives hold back rows other tables still reference, and
-- upkeep.archive_status says how many and by which foreign key. The
-- launcher serves every database in turn (upkeep.max_schedulers), and the
-- metric upkeep_scheduler_wait_seconds says when one waits for its turn.
-- Sizes in upkeep.partitions come from the files (upkeep.relation_bytes),
-- without locks; upkeep.metrics reads the index catalogs once
-- (upkeep.index_metrics).

-- Partition bounds are read from their stored node trees, not deparsed
-- and parsed back through this function.
DROP FUNCTION upkeep.bound_micros(text, boolean);

-- The permission triggers fire for other roles only (WHEN, below).
CREATE FUNCTION upkeep."caller_is_superuser"() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'caller_is_superuser_wrapper';
COMMENT ON FUNCTION upkeep.caller_is_superuser() IS
  'Internal: whether the current role is a superuser (the WHEN of the upkeep_check_manager triggers).';

CREATE TABLE upkeep.index_watch (
    index_oid     oid PRIMARY KEY,
    watched_since timestamptz NOT NULL DEFAULT now(),
    unused_since  timestamptz
);
COMMENT ON TABLE upkeep.index_watch IS
  'What the index-health snapshots saw of each index: the evidence behind "unused". PostgreSQL keeps no creation time, and scan counts never reset are of unknown age, so an index is called unused only after the snapshots saw it without scans for upkeep.unused_index_days. Rows of dropped indexes go at the next snapshot.';
COMMENT ON COLUMN upkeep.index_watch.index_oid IS 'The index (its OID: a re-created or concurrently rebuilt index is watched anew).';
COMMENT ON COLUMN upkeep.index_watch.watched_since IS 'The first snapshot that saw the index.';
COMMENT ON COLUMN upkeep.index_watch.unused_since IS 'The first of the snapshots since its last seen scan, all of which saw no scan; NULL when the last snapshot saw scans.';

CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.index_watch
  FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager('database');
GRANT SELECT, INSERT, UPDATE, DELETE ON upkeep.index_watch TO PUBLIC;

COMMENT ON FUNCTION upkeep.snapshot_index_health() IS
  'Appends every index''s size, scans and estimated bloat to upkeep.index_health_history (rows older than 13 months go) and notes in upkeep.index_watch which indexes it saw without scans, the evidence behind "unused"; returns the number of indexes recorded. The workers run it daily (job kind index_snapshot).';

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

CREATE OR REPLACE VIEW upkeep.archive_status AS
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
COMMENT ON COLUMN upkeep.archive_status.status IS 'ok, behind (old rows remain), held back (old rows other tables still reference stay), paused, failed, lock_timeout or not run yet.';
COMMENT ON COLUMN upkeep.archive_status.hint IS 'What to look at when the status is not ok.';
COMMENT ON COLUMN upkeep.archive_status.rows_held_back IS 'Rows older than the cut-off that stay because a foreign key (NO ACTION or RESTRICT) of another table still references them (row archiving; NULL if you may not read the tables).';
COMMENT ON COLUMN upkeep.archive_status.held_back_by IS 'Which foreign keys hold them back, with how many rows each.';

CREATE FUNCTION upkeep."scheduler_wait_seconds"() RETURNS double precision
STRICT VOLATILE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'scheduler_wait_seconds_wrapper';
CREATE FUNCTION upkeep."index_metrics"() RETURNS TABLE (
	"metric" TEXT,
	"problem" TEXT,
	"value" double precision
)
STABLE STRICT PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'index_metrics_wrapper';
CREATE OR REPLACE FUNCTION upkeep.metrics_rows()
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
COMMENT ON VIEW upkeep.metrics IS
  'Figures for dashboards, one row per sample: per job last success time, last duration, consecutive failures; per managed table future partitions and rows in DEFAULT; per archive source rows archived; per view seconds since refresh and since what it reads changed unrefreshed; per row archive how far its oldest row is past the cut-off; per job its interval; index problems by kind; total estimated index bloat; how long this database''s scheduler has waited for its turn. upkeep.prometheus() renders it for Prometheus.';

-- The partition report pins its search path itself: a SET clause is
-- applied again for every row a set-returning function returns.
ALTER FUNCTION upkeep.partition_report() RESET search_path;

-- Sizes read from the files, without locks.
CREATE FUNCTION upkeep."relation_bytes"("rel" regclass) RETURNS bigint
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'relation_bytes_sql_wrapper';

-- Sizes from the files (upkeep.relation_bytes): pg_total_relation_size()
-- locks each partition, its TOAST table and indexes in turn, and so waits
-- behind DDL on any of them.
CREATE OR REPLACE VIEW upkeep.partitions AS
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
COMMENT ON COLUMN upkeep.partitions.size_bytes IS
  'Bytes on disk of the partition with its TOAST table and indexes, read from the files: no lock taken, no wait behind DDL.';
COMMENT ON FUNCTION upkeep.relation_bytes(regclass) IS
  'Bytes on disk of one relation (all its forks; not its indexes or TOAST table), read from its files without opening or locking it, so it never waits behind DDL. 0 for a relation without storage.';

-- The permission triggers do not fire for a superuser: their checks cost
-- half a millisecond a row, and the run log, the job states and the
-- policies are written a row per job (the trigger's WHEN, below).
CREATE OR REPLACE FUNCTION upkeep.check_manager() RETURNS trigger
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
-- Each permission trigger again, with its WHEN: (table, what its rows are about).
DO $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM (VALUES ('partition_policies', 'parent'), ('archive_policies', 'source'),
                                 ('matview_policies', 'matview'), ('index_snapshot_policy', 'database'),
                                 ('reindex_policy', 'database'), ('index_health_history', 'database'),
                                 ('job_state', 'job_id'), ('job_runs', 'job_id'), ('partition_state', 'job_id'),
                                 ('matview_state', 'job_id'), ('unfinished_actions', 'job_id')) v(tab, side) LOOP
    EXECUTE format('DROP TRIGGER upkeep_check_manager ON upkeep.%I', t.tab);
    EXECUTE format('CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.%I '
                   'FOR EACH ROW WHEN (NOT upkeep.caller_is_superuser()) EXECUTE FUNCTION upkeep.check_manager(%L)',
                   t.tab, t.side);
  END LOOP;
END
$$;


-- The launcher visits a database with nothing due only hourly: a committed
-- policy change wakes it.
CREATE FUNCTION upkeep."wake_workers"() RETURNS TRIGGER
LANGUAGE c AS 'MODULE_PATHNAME', 'wake_workers_wrapper';
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

-- What views read is walked by the library itself (a recursive query
-- over the catalogs took most of a refresh decision at 500 views).
DROP FUNCTION upkeep.matview_reads();

-- Whether a managed view reads the relation (or is it): the walk of what
-- a view reads (the library's, in matviews/reads.rs) taken backwards,
-- from the relation up through the views whose rules name it (on through
-- plain views, not through other materialized views) and its inheritance
-- parents, stopping at the first managed view. A refresh of a materialized view, and the pruning of
-- change records, check their relations this way instead of walking
-- every managed view's reads.
CREATE FUNCTION upkeep.read_by_managed_view(rel oid) RETURNS boolean
LANGUAGE sql STABLE
SET jit = off SET search_path = pg_catalog, pg_temp
AS $$
  WITH RECURSIVE readers(relid) AS (
    SELECT rel
    UNION
    SELECT x.relid
      FROM readers r
      CROSS JOIN LATERAL (
        SELECT w.ev_class AS relid
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
         WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = r.relid
           AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND w.ev_class <> r.relid
        UNION ALL
        SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = r.relid
      ) x
     WHERE r.relid = rel
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = r.relid AND c.relkind = 'm')
  )
  SELECT EXISTS (SELECT 1 FROM readers r JOIN upkeep.matview_policies p ON p.matview::oid = r.relid)
$$;
COMMENT ON FUNCTION upkeep.read_by_managed_view(oid) IS
  'Internal: whether a managed materialized view reads the relation (through plain views, partitions and inheritance parents), or is it.';

-- A refresh checks its one view upwards (it walked every managed view's reads).
CREATE OR REPLACE FUNCTION upkeep.track_refreshes() RETURNS event_trigger
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

-- Switching over from pg_partman and pg_cron in one call each.
CREATE FUNCTION upkeep."adopt_pg_partman"(
	"dry_run" bool DEFAULT true
) RETURNS TABLE (
	"parent" TEXT,
	"pg_partman" TEXT,
	"pg_upkeep" TEXT,
	"status" TEXT,
	"detail" TEXT
)
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'adopt_pg_partman_wrapper';
COMMENT ON FUNCTION upkeep.adopt_pg_partman(boolean) IS
  'Takes over pg_partman''s time-partitioned parents: for each row of its part_config, the equivalent partition policy (granularity, premake, retention and where it goes, the time zone of its bounds), registered with pg_partman''s automatic_maintenance turned off for that parent; every partition and the default partition stay as they are. What cannot be carried over exactly is not adopted, with why and what to do. One row per parent. dry_run => true (the default) changes nothing. The way back: upkeep.unmanage_partitions(parent) and automatic_maintenance = ''on''.';
CREATE FUNCTION upkeep."adopt_pg_cron"(
	"dry_run" bool DEFAULT true
) RETURNS TABLE (
	"job" TEXT,
	"pg_cron" TEXT,
	"pg_upkeep" TEXT,
	"status" TEXT,
	"detail" TEXT
)
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'adopt_pg_cron_wrapper';
COMMENT ON FUNCTION upkeep.adopt_pg_cron(boolean) IS
  'Takes over pg_cron jobs written by hand, run in the database pg_cron keeps its jobs in: a job that only refreshes materialized views becomes their policies (every from its schedule, only_when_changed on) and is unscheduled in the same transaction; one that runs pg_partman''s maintenance is unscheduled once pg_partman maintains nothing more; a DELETE of old rows is listed with the manage_archive call that keeps them instead, never taken over; jobs of other databases are listed with the calls to run there. One row per job. dry_run => true (the default) takes the same steps and rolls them back.';
