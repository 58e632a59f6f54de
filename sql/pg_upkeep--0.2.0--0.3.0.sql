-- pg_upkeep 0.2.0 -> 0.3.0: table owners who are not superusers may manage
-- their own tables' policies; a trigger checks every row written to
-- pg_upkeep's tables (see finalize.sql, "Who may see and change what").
-- The run log shows actions running now and those a crash interrupted.

ALTER TABLE upkeep.job_runs DROP CONSTRAINT job_runs_status_check,
  ADD CONSTRAINT job_runs_status_check CHECK (status IN ('ok', 'failed', 'lock_timeout', 'running', 'interrupted'));
-- 0.2.0 left a record behind after each automatic reindex (nothing was
-- left to do, and the index it named was gone): forget those.
DELETE FROM upkeep.unfinished_actions u
 WHERE u.steps = '{}' OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = u.target);
COMMENT ON COLUMN upkeep.job_runs.status IS 'ok, failed, lock_timeout (gave up after upkeep.lock_timeout; retried on a later run), running (a worker is at it now), or interrupted (its process ended first: crash, kill, immediate shutdown; what it had not committed was rolled back).';

-- Who may see and change what. Decided: a policy is registered only by the
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
  'Trigger function of upkeep_check_manager on pg_upkeep''s tables: refuses a written row unless the current role may manage its job (upkeep.may_manage_job), table (upkeep.may_manage) or database (upkeep.may_manage_database).';

CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.partition_policies
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('parent');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.archive_policies
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('source');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.matview_policies
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('matview');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.index_snapshot_policy
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.reindex_policy
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.index_health_history
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('database');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.job_state
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.job_runs
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.partition_state
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.matview_state
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('job_id');
CREATE TRIGGER upkeep_check_manager BEFORE INSERT OR UPDATE OR DELETE ON upkeep.unfinished_actions
  FOR EACH ROW EXECUTE FUNCTION upkeep.check_manager('job_id');

GRANT USAGE ON SCHEMA upkeep TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA upkeep TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON upkeep.partition_policies, upkeep.archive_policies, upkeep.matview_policies,
  upkeep.index_snapshot_policy, upkeep.reindex_policy, upkeep.index_health_history, upkeep.job_state,
  upkeep.job_runs, upkeep.partition_state, upkeep.matview_state, upkeep.unfinished_actions TO PUBLIC;
GRANT USAGE ON SEQUENCE upkeep.job_id_seq TO PUBLIC;

-- Its own search_path, whoever calls it.
ALTER FUNCTION upkeep.matview_reads() SET search_path = pg_catalog, pg_temp;

-- A NULL flag or size is an ERROR with a HINT (0.2.0 was STRICT: no row,
-- no error).
ALTER FUNCTION upkeep.run_maintenance(boolean) CALLED ON NULL INPUT;
ALTER FUNCTION upkeep.index_health_report(bigint) CALLED ON NULL INPUT;
