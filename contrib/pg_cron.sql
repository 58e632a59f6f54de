-- pg_upkeep with pg_cron, for servers that do not preload pg_upkeep (no
-- background workers). Run in the database pg_cron serves
-- (cron.database_name); each job runs in a transaction of its own.
-- Tested as written by pgrx-tests/tests/pg_cron.rs.

-- Everything that is due (partitions, archive moves, refreshes, the
-- index-health snapshot), every 10 minutes.
SELECT cron.schedule('upkeep-maintenance', '*/10 * * * *', $$SELECT count(*) FROM upkeep.run_maintenance()$$);

-- Or each kind on its own schedule:
-- archive moves nightly, at 02:30,
SELECT cron.schedule('upkeep-archive', '30 2 * * *', $$SELECT count(*) FROM upkeep.archive()$$);
-- materialized views hourly (only those that are due and changed),
SELECT cron.schedule('upkeep-matviews', '0 * * * *', $$SELECT count(*) FROM upkeep.refresh_matviews()$$);
-- the index-health snapshot daily, at 03:15.
SELECT cron.schedule('upkeep-index-health', '15 3 * * *', $$SELECT upkeep.snapshot_index_health()$$);
