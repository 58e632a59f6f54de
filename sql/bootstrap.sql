-- pg_upkeep bootstrap: the policy tables and the run log. Runs before the
-- generated function definitions.

CREATE SEQUENCE upkeep.job_id_seq;
COMMENT ON SEQUENCE upkeep.job_id_seq IS
  'Job ids shared by every kind of pg_upkeep policy, so a job_id names one job across upkeep.jobs and upkeep.job_runs.';

CREATE TABLE upkeep.partition_policies (
    job_id      bigint PRIMARY KEY DEFAULT nextval('upkeep.job_id_seq'),
    parent      regclass NOT NULL UNIQUE,
    control     text NOT NULL,
    granularity text NOT NULL DEFAULT 'month',
    premake     integer NOT NULL DEFAULT 3 CHECK (premake >= 0),
    retention   interval CHECK (retention > interval '0'),
    archive     text NOT NULL DEFAULT 'archive_table',
    time_zone   text NOT NULL DEFAULT 'UTC',
    start_at    timestamptz,
    every       interval CHECK (every > interval '0'),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE upkeep.partition_policies IS
  'Partition policies: which range-partitioned tables pg_upkeep keeps supplied with partitions. Write it through upkeep.manage_partitions(); carried by pg_dump.';
COMMENT ON COLUMN upkeep.partition_policies.parent IS 'The range-partitioned table.';
COMMENT ON COLUMN upkeep.partition_policies.control IS 'The date, timestamp or timestamptz column the table is partitioned by.';
COMMENT ON COLUMN upkeep.partition_policies.granularity IS 'Period of one partition: day, week, month, quarter or year.';
COMMENT ON COLUMN upkeep.partition_policies.premake IS 'How many future periods to keep ready beyond the current one.';
COMMENT ON COLUMN upkeep.partition_policies.retention IS 'Partitions wholly older than now minus this are archived; NULL keeps them.';
COMMENT ON COLUMN upkeep.partition_policies.archive IS 'Where archived partitions go: archive_table, schema:<name>, tablespace:<name>, detach or drop.';
COMMENT ON COLUMN upkeep.partition_policies.time_zone IS 'IANA zone whose local midnight bounds timestamptz partitions.';
COMMENT ON COLUMN upkeep.partition_policies.start_at IS 'Oldest period to cover; NULL starts at the oldest existing partition or the current period.';
COMMENT ON COLUMN upkeep.partition_policies.every IS 'Least time between two checks by the workers or run_maintenance(); NULL: every cycle. Set with upkeep.alter_job().';
COMMENT ON COLUMN upkeep.partition_policies.enabled IS 'false pauses the policy without forgetting it (upkeep.pause_job / resume_job).';

CREATE TABLE upkeep.archive_policies (
    job_id        bigint PRIMARY KEY DEFAULT nextval('upkeep.job_id_seq'),
    source        regclass NOT NULL UNIQUE,
    time_column   text NOT NULL,
    older_than    interval NOT NULL CHECK (older_than > interval '0'),
    archive_table text,
    batch_size    integer NOT NULL DEFAULT 10000 CHECK (batch_size > 0),
    every         interval DEFAULT '1 hour' CHECK (every > interval '0'),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE upkeep.archive_policies IS
  'Row archive policies: plain tables whose old rows move into an archive table in batches. Write it through upkeep.manage_archive(); carried by pg_dump.';
COMMENT ON COLUMN upkeep.archive_policies.source IS 'The plain table rows leave.';
COMMENT ON COLUMN upkeep.archive_policies.time_column IS 'The date, timestamp or timestamptz column whose age decides; rows where it is NULL never move.';
COMMENT ON COLUMN upkeep.archive_policies.older_than IS 'Rows whose time column is before now() minus this move.';
COMMENT ON COLUMN upkeep.archive_policies.archive_table IS 'Where rows go, as "schema"."name"; NULL: <source>_archive beside the source (created LIKE it when missing).';
COMMENT ON COLUMN upkeep.archive_policies.batch_size IS 'Rows per batch: one statement, and for a worker one transaction.';
COMMENT ON COLUMN upkeep.archive_policies.every IS 'Least time between two runs (default 1 hour). Set with upkeep.alter_job().';
COMMENT ON COLUMN upkeep.archive_policies.enabled IS 'false pauses the policy without forgetting it (upkeep.pause_job / resume_job).';

CREATE TABLE upkeep.job_runs (
    run_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    started_at timestamptz NOT NULL,
    duration   interval NOT NULL,
    status     text NOT NULL CHECK (status IN ('ok', 'failed', 'lock_timeout', 'running', 'interrupted')),
    detail     text,
    error      text,
    sql        text
);
CREATE INDEX job_runs_job_id_run_id ON upkeep.job_runs (job_id, run_id);
CREATE INDEX job_runs_started_at ON upkeep.job_runs (started_at);
COMMENT ON TABLE upkeep.job_runs IS
  'The run log: one row per action pg_upkeep took (what, on what, when, how long, outcome, error, the SQL it ran).';
COMMENT ON COLUMN upkeep.job_runs.action IS 'What was done, e.g. create_partition; check_policy when a policy no longer fits its table.';
COMMENT ON COLUMN upkeep.job_runs.status IS 'ok, failed, lock_timeout (gave up after upkeep.lock_timeout; retried on a later run), running (a worker is at it now), or interrupted (its process ended first: crash, kill, immediate shutdown; what it had not committed was rolled back).';
COMMENT ON COLUMN upkeep.job_runs.sql IS 'The statements the action ran.';

-- Policies travel with pg_dump; the run log is history and does not.
SELECT pg_catalog.pg_extension_config_dump('upkeep.partition_policies', '');
SELECT pg_catalog.pg_extension_config_dump('upkeep.archive_policies', '');
SELECT pg_catalog.pg_extension_config_dump('upkeep.job_id_seq', '');

CREATE TABLE upkeep.partition_state (
    job_id      bigint PRIMARY KEY REFERENCES upkeep.partition_policies ON DELETE CASCADE,
    due_at      timestamptz,
    fingerprint text NOT NULL,
    checked_at  timestamptz NOT NULL
);
COMMENT ON TABLE upkeep.partition_state IS
  'What partition maintenance remembers between runs: when each policy is next due (NULL: never) and a fingerprint of the catalog its last check saw. A run reads partition bounds only for policies that are due or changed. Safe to TRUNCATE: the next run checks everything.';

CREATE TABLE upkeep.job_state (
    job_id               bigint PRIMARY KEY,
    last_run             timestamptz,
    last_status          text,
    last_error           text,
    last_duration        interval,
    consecutive_failures integer NOT NULL DEFAULT 0,
    next_run             timestamptz,
    rows_moved           bigint NOT NULL DEFAULT 0,
    last_success         timestamptz
);
COMMENT ON TABLE upkeep.job_state IS
  'How each job last went, and the earliest time it runs again (its schedule, or the back-off after failures: 1 minute doubling to 1 hour, +/-20%). Read it through upkeep.jobs.';

CREATE TABLE upkeep.unfinished_actions (
    target     regclass PRIMARY KEY,
    job_id     bigint NOT NULL,
    action     text NOT NULL,
    steps      text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE upkeep.unfinished_actions IS
  'Actions a pg_upkeep worker began with a statement that commits by itself (DETACH PARTITION CONCURRENTLY) and has not finished yet: the statements still to run. A worker that dies half-way leaves its row here, and the next run finishes the action. Normally empty.';

CREATE TABLE upkeep.matview_policies (
    job_id            bigint PRIMARY KEY DEFAULT nextval('upkeep.job_id_seq'),
    matview           regclass NOT NULL UNIQUE,
    every             interval NOT NULL DEFAULT '1 hour' CHECK (every > interval '0'),
    concurrent        boolean NOT NULL DEFAULT true,
    only_when_changed boolean NOT NULL DEFAULT true,
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE upkeep.matview_policies IS
  'Materialized view policies: which views pg_upkeep refreshes, how often, CONCURRENTLY or not, and whether only after their tables changed. Write it through upkeep.manage_matview(); carried by pg_dump.';
COMMENT ON COLUMN upkeep.matview_policies.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.matview_policies.matview IS 'The materialized view.';
COMMENT ON COLUMN upkeep.matview_policies.every IS 'Least time between two refreshes (or checks, with only_when_changed). Set with upkeep.alter_job().';
COMMENT ON COLUMN upkeep.matview_policies.concurrent IS 'Refresh with REFRESH MATERIALIZED VIEW CONCURRENTLY, so that readers are never blocked (needs a unique index).';
COMMENT ON COLUMN upkeep.matview_policies.only_when_changed IS 'Skip a refresh when none of the tables the view reads has changed since its last refresh.';
COMMENT ON COLUMN upkeep.matview_policies.enabled IS 'false pauses the policy without forgetting it (upkeep.pause_job / resume_job).';
COMMENT ON COLUMN upkeep.matview_policies.created_at IS 'When the policy was registered.';
COMMENT ON COLUMN upkeep.matview_policies.updated_at IS 'When manage_matview or alter_job last changed it.';
SELECT pg_catalog.pg_extension_config_dump('upkeep.matview_policies', '');

CREATE TABLE upkeep.matview_state (
    job_id       bigint PRIMARY KEY REFERENCES upkeep.matview_policies ON DELETE CASCADE,
    refreshed_at timestamptz NOT NULL,
    duration     interval NOT NULL,
    snapshot     pg_snapshot NOT NULL,
    xid          xid8,
    cid          bigint NOT NULL,
    bases        oid[] NOT NULL,
    fingerprint  text NOT NULL
);
COMMENT ON TABLE upkeep.matview_state IS
  'What each managed view''s last refresh by pg_upkeep saw: when, how long, the snapshot it read (a change committed by a transaction outside it is news), the relations it reads and a fingerprint of how they were tracked. Safe to TRUNCATE: every view is then refreshed once.';
COMMENT ON COLUMN upkeep.matview_state.job_id IS 'The matview job.';
COMMENT ON COLUMN upkeep.matview_state.refreshed_at IS 'When the last refresh by pg_upkeep ran.';
COMMENT ON COLUMN upkeep.matview_state.duration IS 'How long it took.';
COMMENT ON COLUMN upkeep.matview_state.snapshot IS 'A snapshot taken just before the refresh: transactions visible in it are in the view.';
COMMENT ON COLUMN upkeep.matview_state.xid IS 'The refreshing transaction, when it had an ID by then: its own changes count by command.';
COMMENT ON COLUMN upkeep.matview_state.cid IS 'The command in that transaction at which the snapshot was taken.';
COMMENT ON COLUMN upkeep.matview_state.bases IS 'The tables and materialized views it read, through plain views and partitions.';
COMMENT ON COLUMN upkeep.matview_state.fingerprint IS 'Hash of those relations and of the triggers tracking them, as they were at the refresh.';

CREATE SEQUENCE upkeep.change_slots;
COMMENT ON SEQUENCE upkeep.change_slots IS
  'Slots for change records of transactions that cannot update their backend''s own row (upkeep.changes).';

-- One row per (relation, backend): the last transaction of that backend
-- that changed the relation. Writers of different backends never touch the
-- same row, so tracking never makes one writer wait for another.
CREATE TABLE upkeep.changes (
    relid oid NOT NULL,
    slot  integer NOT NULL,
    xid   xid8 NOT NULL,
    cid   bigint NOT NULL,
    PRIMARY KEY (relid, slot)
) WITH (fillfactor = 50);
COMMENT ON TABLE upkeep.changes IS
  'Change tracking for materialized views refreshed only when changed: per relation and backend slot, the last transaction that changed the relation (written by the trigger upkeep_track_changes and the event trigger upkeep_track_refreshes). Compared with upkeep.matview_state.snapshot.';
COMMENT ON COLUMN upkeep.changes.relid IS 'The table (or materialized view) that changed.';
COMMENT ON COLUMN upkeep.changes.slot IS 'The backend that changed it (negative: a one-off record).';
COMMENT ON COLUMN upkeep.changes.xid IS 'The transaction that last changed it from that backend.';
COMMENT ON COLUMN upkeep.changes.cid IS 'The command of that transaction that last changed it.';

-- Whether a refresh saw a change: made by the refreshing transaction
-- itself before the snapshot's command, or by a transaction visible in
-- the snapshot (which never lists its own transaction). Inlined.
CREATE FUNCTION upkeep.seen(c upkeep.changes, s upkeep.matview_state) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN c.xid OPERATOR(pg_catalog.=) s.xid THEN c.cid OPERATOR(pg_catalog.<) s.cid
              ELSE pg_catalog.pg_visible_in_snapshot(c.xid, s.snapshot) END
$$;
COMMENT ON FUNCTION upkeep.seen(upkeep.changes, upkeep.matview_state) IS
  'Internal: whether the refresh recorded in the state saw the change recorded in the row of upkeep.changes.';

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

CREATE TABLE upkeep.index_health_history (
    captured_at timestamptz NOT NULL DEFAULT now(),
    schema      text NOT NULL,
    "table"     text NOT NULL,
    index       text NOT NULL,
    size_bytes  bigint NOT NULL,
    scans       bigint NOT NULL,
    bloat_bytes bigint,
    bloat_ratio double precision
);
CREATE INDEX index_health_history_index ON upkeep.index_health_history (schema, index, captured_at);
CREATE INDEX index_health_history_captured_at ON upkeep.index_health_history (captured_at);
COMMENT ON TABLE upkeep.index_health_history IS
  'Per index and snapshot (upkeep.snapshot_index_health(), daily by the workers): size, scans, estimated bloat. Kept 13 months. Read trends through upkeep.index_growth.';
COMMENT ON COLUMN upkeep.index_health_history.captured_at IS 'When the snapshot was taken.';
COMMENT ON COLUMN upkeep.index_health_history.schema IS 'Schema of the index.';
COMMENT ON COLUMN upkeep.index_health_history."table" IS 'Its table.';
COMMENT ON COLUMN upkeep.index_health_history.index IS 'The index.';
COMMENT ON COLUMN upkeep.index_health_history.size_bytes IS 'Its size then.';
COMMENT ON COLUMN upkeep.index_health_history.scans IS 'Its scan count then (since the last statistics reset).';
COMMENT ON COLUMN upkeep.index_health_history.bloat_bytes IS 'Estimated bloat then (btree indexes with statistics).';
COMMENT ON COLUMN upkeep.index_health_history.bloat_ratio IS 'Size against the estimated size of a fresh build then.';

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

-- The index-health snapshot job: one row, there from the start (not
-- carried by pg_dump: a restored database starts with the default).
CREATE TABLE upkeep.index_snapshot_policy (
    job_id     bigint PRIMARY KEY DEFAULT nextval('upkeep.job_id_seq'),
    every      interval NOT NULL DEFAULT '1 day' CHECK (every > interval '0'),
    enabled    boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO upkeep.index_snapshot_policy DEFAULT VALUES;
COMMENT ON TABLE upkeep.index_snapshot_policy IS
  'The job that appends upkeep.snapshot_index_health() to upkeep.index_health_history (daily by default; change it with upkeep.alter_job).';
COMMENT ON COLUMN upkeep.index_snapshot_policy.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.index_snapshot_policy.every IS 'Time between two snapshots.';
COMMENT ON COLUMN upkeep.index_snapshot_policy.enabled IS 'false pauses it (upkeep.pause_job / resume_job).';
COMMENT ON COLUMN upkeep.index_snapshot_policy.updated_at IS 'When alter_job last changed it.';

-- Automatic reindex: at most one row, written by upkeep.manage_reindex().
CREATE TABLE upkeep.reindex_policy (
    job_id             bigint PRIMARY KEY DEFAULT nextval('upkeep.job_id_seq'),
    single             boolean NOT NULL DEFAULT true UNIQUE CHECK (single),
    min_bloat_ratio    double precision NOT NULL CHECK (min_bloat_ratio > 1),
    min_size_bytes     bigint NOT NULL CHECK (min_size_bytes >= 0),
    maintenance_window text,
    every              interval NOT NULL DEFAULT '1 hour' CHECK (every > interval '0'),
    enabled            boolean NOT NULL DEFAULT true,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE upkeep.reindex_policy IS
  'Automatic reindex (off unless upkeep.manage_reindex() was called): the workers rebuild, one at a time with REINDEX INDEX CONCURRENTLY, btree indexes whose estimated bloat ratio and size reach these, inside the window. Carried by pg_dump.';
COMMENT ON COLUMN upkeep.reindex_policy.job_id IS 'The job (see upkeep.jobs).';
COMMENT ON COLUMN upkeep.reindex_policy.single IS 'Always true: there is one policy per database.';
COMMENT ON COLUMN upkeep.reindex_policy.min_bloat_ratio IS 'Rebuild when the size is at least this many times the estimated size of a fresh build.';
COMMENT ON COLUMN upkeep.reindex_policy.min_size_bytes IS 'Only indexes at least this big.';
COMMENT ON COLUMN upkeep.reindex_policy.maintenance_window IS 'HH:MM-HH:MM in the server''s time zone (may wrap past midnight); NULL: any time.';
COMMENT ON COLUMN upkeep.reindex_policy.every IS 'Time between two checks by the workers.';
COMMENT ON COLUMN upkeep.reindex_policy.enabled IS 'false pauses it.';
COMMENT ON COLUMN upkeep.reindex_policy.updated_at IS 'When manage_reindex or alter_job last changed it.';
SELECT pg_catalog.pg_extension_config_dump('upkeep.reindex_policy', '');
