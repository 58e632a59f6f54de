//! In-database tests of partition management (each runs in one transaction).

#[allow(clippy::module_inception)]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{count, one};
    use pgrx::prelude::*;

    /// A table to partition; the index-health snapshot job (due in a fresh
    /// database) is paused, so that what runs is partition maintenance only.
    fn nav_history(schema_and_name: &str) {
        Spi::run(&format!(
            "CREATE TABLE {schema_and_name} (fund_id int NOT NULL, nav_date date NOT NULL, nav numeric(12,4), \
             PRIMARY KEY (fund_id, nav_date)) PARTITION BY RANGE (nav_date); \
             SELECT upkeep.pause_job(job_id) FROM upkeep.jobs WHERE kind = 'index_snapshot'"
        ))
        .unwrap();
    }

    /// Bounds are read from their stored node trees; they must say what
    /// deparsing them with pg_get_expr() and parsing the text back says
    /// (the way pg_upkeep read them before), for dates, timestamps and
    /// timestamptz in a zone off UTC, MINVALUE, MAXVALUE, infinities,
    /// times before 1970 and DEFAULT.
    #[pg_test]
    fn bounds_from_the_catalog_say_what_pg_get_expr_says() {
        use super::super::facts::range_of;
        use upkeep_core::partitions::facts::Range;
        Spi::run(
            "SET LOCAL TimeZone = 'Asia/Kathmandu';
             CREATE FUNCTION pg_temp.micros(bound text, tz boolean) RETURNS bigint LANGUAGE sql AS $$
               SELECT CASE WHEN bound IS NULL OR bound IN ('MINVALUE', 'MAXVALUE') THEN NULL
                           WHEN tz THEN CASE WHEN isfinite(btrim(bound, '''')::timestamptz)
                                             THEN (extract(epoch FROM btrim(bound, '''')::timestamptz) * 1000000)::int8 END
                           ELSE CASE WHEN isfinite(btrim(bound, '''')::timestamp)
                                     THEN (extract(epoch FROM btrim(bound, '''')::timestamp) * 1000000)::int8 END END $$;
             CREATE TABLE bd (d date) PARTITION BY RANGE (d);
             CREATE TABLE bd_1 PARTITION OF bd FOR VALUES FROM (MINVALUE) TO ('1969-07-20');
             CREATE TABLE bd_2 PARTITION OF bd FOR VALUES FROM ('1969-07-20') TO ('2024-02-29');
             CREATE TABLE bd_3 PARTITION OF bd FOR VALUES FROM ('2024-02-29') TO ('infinity');
             CREATE TABLE bd_4 PARTITION OF bd DEFAULT;
             CREATE TABLE bi (d date) PARTITION BY RANGE (d);
             CREATE TABLE bi_1 PARTITION OF bi FOR VALUES FROM ('-infinity') TO ('2000-01-01');
             CREATE TABLE bt (t timestamp) PARTITION BY RANGE (t);
             CREATE TABLE bt_1 PARTITION OF bt FOR VALUES FROM ('1969-12-31 23:59:59.5') TO ('2024-01-01 12:00');
             CREATE TABLE bt_2 PARTITION OF bt FOR VALUES FROM ('2024-01-01 12:00') TO (MAXVALUE);
             CREATE TABLE bz (t timestamptz) PARTITION BY RANGE (t);
             CREATE TABLE bz_1 PARTITION OF bz FOR VALUES FROM ('-infinity') TO ('2024-01-01 00:00');
             CREATE TABLE bz_2 PARTITION OF bz FOR VALUES FROM ('2024-01-01 00:00') TO ('2024-02-01 00:00 UTC');",
        )
        .unwrap();
        let rows: Vec<(String, String, Range)> = Spi::connect(|client| {
            client
                .select(
                    r"SELECT c.relname::text, c.relpartbound::text, m IS NULL,
                             pg_temp.micros(m[1], a.atttypid = 'timestamptz'::regtype),
                             pg_temp.micros(m[2], a.atttypid = 'timestamptz'::regtype)
                        FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
                        JOIN pg_partitioned_table t ON t.partrelid = i.inhparent
                        JOIN pg_attribute a ON a.attrelid = t.partrelid AND a.attnum = t.partattrs[0],
                             regexp_match(pg_get_expr(c.relpartbound, 0), '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') m
                       WHERE i.inhparent IN ('bd'::regclass, 'bi'::regclass, 'bt'::regclass, 'bz'::regclass)
                       ORDER BY 1",
                    None,
                    &[],
                )
                .unwrap()
                .map(|r| {
                    let range = if r.get::<bool>(3).unwrap().unwrap() {
                        Range::Default
                    } else {
                        Range::Bounded { lower: r.get::<i64>(4).unwrap(), upper: r.get::<i64>(5).unwrap() }
                    };
                    (r.get::<String>(1).unwrap().unwrap(), r.get::<String>(2).unwrap().unwrap(), range)
                })
                .collect()
        });
        assert_eq!(rows.len(), 9);
        for (name, tree, expected) in rows {
            assert_eq!(range_of(&tree), Ok(expected), "{name}");
        }
        // And one known by heart: 2024-02-29 is 1,709,164,800 s after 1970.
        let leap: String = one("SELECT relpartbound::text FROM pg_class WHERE relname = 'bd_3'");
        assert_eq!(range_of(&leap), Ok(Range::Bounded { lower: Some(1_709_164_800_000_000), upper: None }));
    }

    #[pg_test]
    fn creates_current_and_premade_months_then_nothing() {
        nav_history("public.nav_history");
        let made = count("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 2)");
        assert_eq!(made, 3);
        let this_month: String = one("SELECT 'nav_history_p' || to_char(now(), 'YYYY_MM')");
        assert_eq!(count(&format!("SELECT 1 FROM pg_class WHERE relname = '{this_month}' AND relispartition")), 1);
        // Bounds are plain calendar months.
        let bound: String =
            one(&format!("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = '{this_month}'"));
        let expected: String = one("SELECT format('FOR VALUES FROM (%L) TO (%L)', date_trunc('month', now())::date, (date_trunc('month', now()) + interval '1 month')::date)");
        assert_eq!(bound, expected);

        let runs = count("SELECT * FROM upkeep.job_runs");
        assert_eq!(runs, 3);
        // A second run does nothing and records nothing.
        assert_eq!(count("SELECT * FROM upkeep.create_partitions()"), 0);
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0);
        assert_eq!(count("SELECT * FROM upkeep.job_runs"), runs);
        assert_eq!(one::<String>("SELECT status FROM upkeep.partition_health"), "ok");
        assert_eq!(one::<i32>("SELECT future_partitions FROM upkeep.partition_health"), 2);
    }

    #[pg_test]
    fn dry_run_shows_what_a_real_run_does_and_changes_nothing() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        Spi::run("UPDATE upkeep.partition_policies SET premake = 4").unwrap();
        let tables = count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass");
        let runs = count("SELECT * FROM upkeep.job_runs");
        Spi::run("CREATE TEMP TABLE planned AS SELECT target, sql FROM upkeep.create_partitions(dry_run => true)")
            .unwrap();
        assert_eq!(count("SELECT * FROM planned"), 4);
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass"), tables);
        assert_eq!(count("SELECT * FROM upkeep.job_runs"), runs);
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance(dry_run => true) WHERE status = 'dry_run'"), 4);
        // The real run takes exactly the planned actions, with the same SQL.
        Spi::run("CREATE TEMP TABLE done AS SELECT target, sql FROM upkeep.create_partitions() WHERE status = 'ok'")
            .unwrap();
        assert_eq!(count("SELECT * FROM planned EXCEPT SELECT * FROM done"), 0);
        assert_eq!(count("SELECT * FROM done EXCEPT SELECT * FROM planned"), 0);
    }

    /// A call from SQL detaches with plain DETACH (CONCURRENTLY cannot run
    /// in its transaction); its dry run shows exactly that, and says what a
    /// worker would run instead. Creations are the same either way.
    #[pg_test]
    fn a_dry_run_says_what_a_worker_runs_instead() {
        nav_history("public.nav_history");
        Spi::run(
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1, \
                    start_at => date_trunc('month', now()) - interval '6 months'); \
             UPDATE upkeep.partition_policies SET retention = '2 months', archive = 'detach'",
        )
        .unwrap();
        Spi::run(
            "CREATE TEMP TABLE planned AS SELECT action, sql, detail FROM upkeep.create_partitions(dry_run => true)",
        )
        .unwrap();
        // Months -6 to -3 end before the cut-off (now - 2 months).
        let moves = count("SELECT 1 FROM planned WHERE action = 'archive_partition'");
        assert_eq!(moves, 4);
        assert_eq!(
            count(
                "SELECT 1 FROM planned WHERE action = 'archive_partition' AND sql LIKE '%DETACH PARTITION %' \
                    AND sql NOT LIKE '%CONCURRENTLY%' \
                    AND detail LIKE '%; a pg_upkeep worker runs instead:%DETACH PARTITION % CONCURRENTLY;%'"
            ),
            moves
        );
        assert_eq!(count("SELECT 1 FROM planned WHERE action <> 'archive_partition' AND detail LIKE '%worker%'"), 0);
    }

    #[pg_test]
    fn yearly_timestamptz_bounds_are_local_midnight() {
        Spi::run("CREATE TABLE audit_log (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at)").unwrap();
        Spi::run("SELECT upkeep.manage_partitions('audit_log', 'at', 'year', 1, time_zone => 'Asia/Kathmandu')")
            .unwrap();
        let year: i32 = one("SELECT extract(year FROM now() AT TIME ZONE 'Asia/Kathmandu')::int");
        let lower: bool = one(&format!(
            "SELECT pg_get_expr(relpartbound, oid) LIKE '%' || (timestamptz '{year}-01-01 00:00:00 Asia/Kathmandu')::text || '%' \
               FROM pg_class WHERE relname = 'audit_log_p{year}'"
        ));
        assert!(lower, "the {year} partition starts at local midnight of 1 January in Kathmandu");
        // A row stamped just after local midnight lands in the new year's partition.
        Spi::run(&format!(
            "INSERT INTO audit_log VALUES (1, timestamptz '{}-01-01 00:00:01 Asia/Kathmandu')",
            year + 1
        ))
        .unwrap();
        assert_eq!(count(&format!("SELECT 1 FROM audit_log_p{}", year + 1)), 1);
    }

    #[pg_test]
    fn rows_in_default_move_into_the_new_partition() {
        nav_history("public.nav_history");
        Spi::run("CREATE TABLE public.nav_history_default PARTITION OF public.nav_history DEFAULT").unwrap();
        Spi::run(
            "INSERT INTO public.nav_history SELECT f, d, 1 FROM generate_series(1, 4) f, \
             generate_series(date_trunc('month', now())::date - 40, date_trunc('month', now())::date + 40, interval '1 day') d",
        )
        .unwrap();
        let total = count("SELECT * FROM public.nav_history");
        let checksum: String = one("SELECT md5(string_agg(fund_id || ':' || nav_date, ',' ORDER BY fund_id, nav_date)) FROM public.nav_history");
        let made = count("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1)");
        assert_eq!(made, 2);
        // Only rows outside the new partitions stay in DEFAULT; none lost or doubled.
        assert_eq!(count("SELECT * FROM public.nav_history"), total);
        assert_eq!(
            one::<String>("SELECT md5(string_agg(fund_id || ':' || nav_date, ',' ORDER BY fund_id, nav_date)) FROM public.nav_history"),
            checksum
        );
        assert_eq!(
            count("SELECT * FROM ONLY public.nav_history_default WHERE nav_date >= date_trunc('month', now())"),
            0
        );
        assert!(count("SELECT * FROM ONLY public.nav_history_default") > 0);
        assert_eq!(one::<String>("SELECT status FROM upkeep.partition_health"), "rows_in_default");
        let moved: String = one("SELECT string_agg(detail, ' | ') FROM upkeep.job_runs");
        assert!(moved.contains("rows moved from the default partition"), "{moved}");
    }

    #[pg_test]
    fn hand_made_partitions_are_recognised_by_bounds() {
        nav_history("public.nav_history");
        Spi::run(
            "CREATE TABLE public.legacy_this_month PARTITION OF public.nav_history \
             FOR VALUES FROM (date_trunc('month', now())::date) TO ((date_trunc('month', now()) + interval '1 month')::date)",
        )
        .unwrap();
        let made = count("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1)");
        assert_eq!(made, 1, "only next month is missing");
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass"), 2);
    }

    #[pg_test]
    fn gaps_are_filled_and_names_that_are_taken_get_a_counter() {
        nav_history("public.nav_history");
        Spi::run(
            "CREATE TABLE public.old PARTITION OF public.nav_history \
             FOR VALUES FROM ((date_trunc('month', now()) - interval '3 months')::date) \
                          TO ((date_trunc('month', now()) - interval '2 months')::date)",
        )
        .unwrap();
        // A stray table already uses the name of this month's partition.
        Spi::run("CREATE TABLE public.nav_history_p_placeholder ()").unwrap();
        let this_month: String = one("SELECT 'nav_history_p' || to_char(now(), 'YYYY_MM')");
        Spi::run(&format!("ALTER TABLE public.nav_history_p_placeholder RENAME TO {this_month}")).unwrap();
        assert_eq!(one::<i32>("SELECT 1"), 1);
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        // The two missing months between the old partition and now, and this month.
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass"), 4);
        assert_eq!(count(&format!("SELECT 1 FROM pg_class WHERE relname = '{this_month}_2' AND relispartition")), 1);
        assert_eq!(one::<i32>("SELECT gaps FROM upkeep.partition_health"), 0);
    }

    #[pg_test]
    fn hostile_names_work() {
        Spi::run(r#"CREATE SCHEMA "My Schema""#).unwrap();
        Spi::run(
            r#"CREATE TABLE "My Schema"."Nav; DROP TABLE x; --""" ("Fund Id" int, "Nav Date" timestamp NOT NULL) PARTITION BY RANGE ("Nav Date")"#,
        )
        .unwrap();
        let made = count(
            r#"SELECT upkeep.manage_partitions('"My Schema"."Nav; DROP TABLE x; --"""', 'Nav Date', premake => 1)"#,
        );
        assert_eq!(made, 2);
        assert_eq!(
            count(r#"SELECT 1 FROM pg_inherits WHERE inhparent = '"My Schema"."Nav; DROP TABLE x; --"""'::regclass"#),
            2
        );
        assert_eq!(count("SELECT * FROM upkeep.partitions WHERE state = 'current'"), 1);
    }

    /// The view reads sizes from the files (no lock, so it never waits
    /// behind DDL; pgrx-tests/tests/scale.rs): what pg_total_relation_size()
    /// says of each partition with its TOAST table and indexes.
    #[pg_test]
    fn the_partitions_view_sizes_like_pg_total_relation_size() {
        nav_history("public.nav_history");
        Spi::run("ALTER TABLE public.nav_history ADD COLUMN note text; CREATE INDEX ON public.nav_history (nav)")
            .unwrap();
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1)").unwrap();
        Spi::run(
            "INSERT INTO public.nav_history SELECT g, current_date, g, \
               (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 160) i) FROM generate_series(1, 300) g",
        )
        .unwrap();
        assert!(one::<i64>("SELECT sum(size_bytes)::int8 FROM upkeep.partitions") > 1_000_000, "the rows are counted");
        let wrong: i64 = one(
            "SELECT count(*) FROM upkeep.partitions WHERE size_bytes IS DISTINCT FROM pg_total_relation_size(partition)",
        );
        assert_eq!(wrong, 0);
    }

    /// A table Citus distributes is refused at registration, and a policy
    /// registered before Citus took the table over fails its runs saying
    /// why and what Citus offers; nothing is created either way.
    #[pg_test(
        error = "table public.nav_history is a Citus distributed or reference table, which pg_upkeep does not manage"
    )]
    fn a_citus_distributed_table_is_refused() {
        nav_history("public.nav_history");
        nav_history("public.earlier");
        Spi::run("SELECT upkeep.manage_partitions('public.earlier', 'nav_date', premake => 1)").unwrap();
        crate::test_support::citus_distributes("public.earlier");
        Spi::run("UPDATE upkeep.partition_policies SET premake = 4").unwrap();
        let (status, error) =
            Spi::get_two::<String, String>("SELECT status, error FROM upkeep.create_partitions()").unwrap();
        assert_eq!(status.as_deref(), Some("failed"));
        assert!(error.unwrap_or_default().contains("create_time_partitions()"));
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.earlier'::regclass"), 2);
        crate::test_support::citus_distributes("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date')").unwrap();
    }

    #[pg_test]
    fn long_names_are_shortened_and_unique() {
        let a = "a".repeat(60);
        let b = format!("{}b", "a".repeat(59));
        for t in [&a, &b] {
            Spi::run(&format!("CREATE TABLE {t} (d date NOT NULL) PARTITION BY RANGE (d)")).unwrap();
            Spi::run(&format!("SELECT upkeep.manage_partitions('{t}', 'd', premake => 0)")).unwrap();
        }
        assert_eq!(count("SELECT DISTINCT partition FROM upkeep.partitions"), 2);
        assert_eq!(
            count("SELECT 1 FROM pg_class WHERE relispartition AND length(relname) <= 63 AND relname LIKE 'aaaa%'"),
            2
        );
    }

    #[pg_test]
    fn new_partitions_belong_to_the_parent_owner_with_its_privileges() {
        Spi::run("CREATE ROLE upkeep_app_owner").unwrap();
        Spi::run("GRANT CREATE ON SCHEMA public TO upkeep_app_owner").unwrap();
        Spi::run("CREATE ROLE upkeep_reader").unwrap();
        nav_history("public.nav_history");
        Spi::run("ALTER TABLE public.nav_history OWNER TO upkeep_app_owner").unwrap();
        Spi::run("GRANT SELECT ON public.nav_history TO upkeep_reader").unwrap();
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        let owner: String =
            one("SELECT pg_get_userbyid(c.relowner)::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
              WHERE i.inhparent = 'public.nav_history'::regclass");
        assert_eq!(owner, "upkeep_app_owner");
        let can_read: bool = one(
            "SELECT has_table_privilege('upkeep_reader', c.oid, 'SELECT') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
              WHERE i.inhparent = 'public.nav_history'::regclass",
        );
        assert!(can_read);
    }

    #[pg_test]
    fn actions_run_as_the_table_owner_even_when_a_superuser_calls() {
        Spi::run("CREATE ROLE upkeep_app_owner").unwrap();
        Spi::run("GRANT CREATE ON SCHEMA public TO upkeep_app_owner").unwrap();
        nav_history("public.nav_history");
        Spi::run("CREATE TABLE public.nav_history_default PARTITION OF public.nav_history DEFAULT").unwrap();
        Spi::run("ALTER TABLE public.nav_history OWNER TO upkeep_app_owner").unwrap();
        Spi::run("ALTER TABLE public.nav_history_default OWNER TO upkeep_app_owner").unwrap();
        // The application's trigger notes who deletes from DEFAULT.
        Spi::run("CREATE TABLE public.who_ran (who text)").unwrap();
        Spi::run("GRANT INSERT ON public.who_ran TO upkeep_app_owner").unwrap();
        Spi::run(
            "CREATE FUNCTION public.note_who() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO public.who_ran VALUES (current_user); RETURN OLD; END $$",
        )
        .unwrap();
        Spi::run(
            "CREATE TRIGGER note_who BEFORE DELETE ON public.nav_history_default FOR EACH ROW EXECUTE FUNCTION public.note_who()",
        )
        .unwrap();
        Spi::run("INSERT INTO public.nav_history VALUES (1, current_date, 1)").unwrap();
        assert!(one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"));

        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        assert_eq!(one::<String>("SELECT string_agg(who, ',') FROM public.who_ran"), "upkeep_app_owner");
        assert_eq!(
            one::<String>(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
                            WHERE i.inhparent = 'public.nav_history'::regclass AND c.relname <> 'nav_history_default'"
            ),
            "upkeep_app_owner"
        );
        assert_eq!(count("SELECT * FROM ONLY public.nav_history_default"), 0);
        // The caller is the caller again afterwards.
        assert!(one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"));
    }

    #[pg_test]
    fn a_broken_policy_is_recorded_and_does_not_stop_the_others() {
        nav_history("public.first");
        nav_history("public.second");
        Spi::run("SELECT upkeep.manage_partitions('public.first', 'nav_date', premake => 0)").unwrap();
        Spi::run("SELECT upkeep.manage_partitions('public.second', 'nav_date', premake => 0)").unwrap();
        Spi::run("UPDATE upkeep.partition_policies SET premake = 2").unwrap();
        // The first table's control column is renamed behind the policy's back.
        Spi::run("ALTER TABLE public.first RENAME COLUMN nav_date TO day").unwrap();
        let failed =
            count("SELECT * FROM upkeep.run_maintenance() WHERE status = 'failed' AND target = 'public.first'");
        assert_eq!(failed, 1);
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.second'::regclass"), 3);
        let err: String = one("SELECT last_error FROM upkeep.jobs WHERE target = 'first'");
        assert!(err.contains("\"nav_date\" does not exist in table public.first"), "{err}");
        assert_eq!(
            one::<String>("SELECT status FROM upkeep.partition_health WHERE parent = 'public.first'::regclass"),
            "error"
        );
    }

    #[pg_test]
    fn unmanage_forgets_the_policy_and_keeps_the_tables() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1)").unwrap();
        Spi::run("SELECT upkeep.unmanage_partitions('public.nav_history')").unwrap();
        assert_eq!(count("SELECT * FROM upkeep.partition_policies"), 0);
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass"), 2);
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0);
    }

    #[pg_test]
    fn updating_a_policy_takes_effect() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        let made = count("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 3)");
        assert_eq!(made, 3);
        assert_eq!(count("SELECT * FROM upkeep.partition_policies"), 1);
        assert_eq!(one::<i32>("SELECT premake FROM upkeep.partition_policies"), 3);
    }

    #[pg_test]
    fn remembers_when_it_is_next_due_and_notices_changes() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 2)").unwrap();
        // With this month and two more in place, the next partition is
        // needed when next month begins (next month + 2 is not there yet).
        let due_ok: bool = one(
            "SELECT due_at = (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' \
               FROM upkeep.partition_state",
        );
        assert!(due_ok);
        // A partition dropped behind our back is noticed and made again.
        let next_month: String = one("SELECT 'public.nav_history_p' || to_char(now() + interval '1 month', 'YYYY_MM')");
        Spi::run(&format!("DROP TABLE {next_month}")).unwrap();
        let rows = count("SELECT * FROM upkeep.run_maintenance() WHERE status = 'ok'");
        assert_eq!(rows, 1);
        assert_eq!(count(&format!("SELECT 1 FROM pg_class WHERE oid = to_regclass('{next_month}')")), 1);
        // A policy changed by hand is noticed too.
        Spi::run("UPDATE upkeep.partition_policies SET premake = 3").unwrap();
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance() WHERE status = 'ok'"), 1);
        // Forgetting the state is harmless: the next run checks and finds nothing to do.
        Spi::run("TRUNCATE upkeep.partition_state").unwrap();
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0);
        assert_eq!(count("SELECT * FROM upkeep.partition_state"), 1);
    }

    /// A deadlock the action gave way in is over when it is reported: the
    /// job is retried at the next cycle, not after a back-off (after a crash
    /// a worker finishing a move could deadlock with the scheduler's catalog
    /// reads and then sit out a minute). Other failures back off.
    #[pg_test]
    fn a_deadlock_is_retried_at_the_next_cycle_other_failures_back_off() {
        use crate::outcome::{Outcome, Status};
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        let job: i64 = one("SELECT job_id FROM upkeep.jobs WHERE kind = 'partitions'");
        let failed = |transient| Outcome {
            transient,
            ..Outcome::noted(
                job,
                crate::actions::ActionKind::ArchivePartition,
                "public.nav_history_p2020_01".into(),
                Status::Failed,
                String::new(),
                Some("deadlock detected".into()),
            )
        };
        crate::job_state::record_job_runs(&[job], &[failed(true)]);
        assert_eq!(one::<i32>("SELECT consecutive_failures FROM upkeep.jobs WHERE kind = 'partitions'"), 1);
        assert!(one::<bool>("SELECT next_run IS NULL OR next_run <= now() FROM upkeep.jobs WHERE kind = 'partitions'"));
        crate::job_state::record_job_runs(&[job], &[failed(false)]);
        let wait: f64 =
            one("SELECT extract(epoch FROM next_run - now())::float8 FROM upkeep.jobs WHERE kind = 'partitions'");
        assert!((96.0..=144.0).contains(&wait), "the second failure in a row backs off two minutes, not {wait}s");
    }

    #[pg_test]
    fn a_failing_job_backs_off_and_run_job_runs_it_anyway() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        let job: i64 = one("SELECT job_id FROM upkeep.jobs WHERE kind = 'partitions'");
        assert_eq!(one::<String>("SELECT last_status FROM upkeep.jobs WHERE kind = 'partitions'"), "ok");
        assert_eq!(one::<i32>("SELECT consecutive_failures FROM upkeep.jobs WHERE kind = 'partitions'"), 0);
        Spi::run("ALTER TABLE public.nav_history RENAME COLUMN nav_date TO day").unwrap();
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance() WHERE status = 'failed'"), 1);
        assert_eq!(one::<i32>("SELECT consecutive_failures FROM upkeep.jobs WHERE kind = 'partitions'"), 1);
        let wait: f64 =
            one("SELECT extract(epoch FROM next_run - now())::float8 FROM upkeep.jobs WHERE kind = 'partitions'");
        assert!((48.0..=72.0).contains(&wait), "first retry after about a minute, not {wait}s");
        // Backing off: the next cycle leaves it alone ...
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0);
        // ... but run_job runs it now, and the wait doubles.
        assert_eq!(count(&format!("SELECT * FROM upkeep.run_job({job}) WHERE status = 'failed'")), 1);
        assert_eq!(one::<i32>("SELECT consecutive_failures FROM upkeep.jobs WHERE kind = 'partitions'"), 2);
        let wait: f64 =
            one("SELECT extract(epoch FROM next_run - now())::float8 FROM upkeep.jobs WHERE kind = 'partitions'");
        assert!((96.0..=144.0).contains(&wait), "second retry after about two minutes, not {wait}s");
        // Fixed: the next run succeeds and the count resets.
        Spi::run("ALTER TABLE public.nav_history RENAME COLUMN day TO nav_date").unwrap();
        Spi::run("UPDATE upkeep.partition_policies SET premake = 1").unwrap();
        assert_eq!(count(&format!("SELECT * FROM upkeep.run_job({job}) WHERE status = 'ok'")), 1);
        assert_eq!(one::<i32>("SELECT consecutive_failures FROM upkeep.jobs WHERE kind = 'partitions'"), 0);
        assert_eq!(one::<String>("SELECT last_status FROM upkeep.jobs WHERE kind = 'partitions'"), "ok");
    }

    #[pg_test]
    fn paused_jobs_wait_and_schedules_are_kept() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0)").unwrap();
        let job: i64 = one("SELECT job_id FROM upkeep.jobs WHERE kind = 'partitions'");
        Spi::run(&format!("SELECT upkeep.pause_job({job})")).unwrap();
        assert!(!one::<bool>("SELECT enabled FROM upkeep.jobs WHERE kind = 'partitions'"));
        assert_eq!(one::<String>("SELECT status FROM upkeep.partition_health"), "paused");
        Spi::run("UPDATE upkeep.partition_policies SET premake = 1").unwrap();
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0, "a paused job does not run by itself");
        Spi::run(&format!("SELECT upkeep.resume_job({job})")).unwrap();
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance() WHERE status = 'ok'"), 1);

        // At most every hour: a new need waits for the schedule ...
        Spi::run(&format!("SELECT upkeep.alter_job({job}, every => '1 hour')")).unwrap();
        assert_eq!(one::<String>("SELECT schedule FROM upkeep.jobs WHERE kind = 'partitions'"), "every 01:00:00");
        Spi::run("UPDATE upkeep.partition_policies SET premake = 2").unwrap();
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0);
        // ... unless the table is named explicitly.
        assert_eq!(count("SELECT * FROM upkeep.create_partitions('public.nav_history') WHERE status = 'ok'"), 1);
    }

    #[pg_test(error = "job 424242 does not exist")]
    fn unknown_jobs_are_refused() {
        Spi::run("SELECT upkeep.pause_job(424242)").unwrap();
    }

    /// nav_history with months m-6 .. m+1 and rows in each of them.
    fn six_months_of_history() -> i64 {
        nav_history("public.nav_history");
        Spi::run(
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1, \
                    start_at => date_trunc('month', now()) - interval '6 months')",
        )
        .unwrap();
        Spi::run(
            "INSERT INTO public.nav_history SELECT 1, d, 1 FROM generate_series( \
               (date_trunc('month', now()) - interval '6 months')::date, (date_trunc('month', now()) + interval '1 month')::date, \
               interval '1 day') d",
        )
        .unwrap();
        count("SELECT * FROM public.nav_history")
    }

    fn keep_three_months(mode: &str) {
        Spi::run(&format!(
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1, \
                    retention => '3 months', archive => '{mode}')"
        ))
        .unwrap();
    }

    fn attached() -> i64 {
        count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass")
    }

    #[pg_test]
    fn old_partitions_move_to_the_archive_table_and_stay_queryable() {
        let rows = six_months_of_history();
        assert_eq!(attached(), 8);
        keep_three_months("archive_table");
        // Months m-6, m-5 and m-4 end before now - 3 months; m-3 straddles the cut-off and stays.
        assert_eq!(attached(), 5);
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.nav_history_archive'::regclass"), 3);
        assert_eq!(
            one::<String>("SELECT relkind::text FROM pg_class WHERE oid = 'public.nav_history_archive'::regclass"),
            "p"
        );
        // Nothing lost, nothing doubled: live + archive hold every row once.
        assert_eq!(count("SELECT * FROM public.nav_history") + count("SELECT * FROM public.nav_history_archive"), rows);
        assert_eq!(count("SELECT * FROM upkeep.job_runs WHERE action = 'archive_partition' AND status = 'ok'"), 3);
        // A later run neither archives again nor re-creates the archived months.
        assert_eq!(count("SELECT * FROM upkeep.run_maintenance()"), 0);
        assert_eq!(
            count(&format!(
                "SELECT * FROM upkeep.run_job({})",
                one::<i64>("SELECT job_id FROM upkeep.jobs WHERE kind = 'partitions'")
            )),
            0
        );
        assert_eq!(attached(), 5);
    }

    #[pg_test]
    fn a_move_left_between_detach_and_attach_is_finished_by_the_next_run() {
        let rows = six_months_of_history();
        keep_three_months("archive_table");
        let (oldest_live, bounds): (String, String) = Spi::get_two(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
               JOIN pg_class c ON c.oid = i.inhrelid \
              WHERE i.inhparent = 'public.nav_history'::regclass ORDER BY c.relname LIMIT 1",
        )
        .map(|(a, b)| (a.unwrap(), b.unwrap()))
        .unwrap();
        // What a worker leaves when it dies right after DETACH CONCURRENTLY
        // committed: a plain table, and the record of the step still to do.
        Spi::run(&format!("ALTER TABLE public.nav_history DETACH PARTITION public.{oldest_live}")).unwrap();
        Spi::run_with_args(
            "INSERT INTO upkeep.unfinished_actions (target, job_id, action, steps) \
             SELECT $1::regclass, job_id, 'archive_partition', ARRAY[$2] FROM upkeep.jobs WHERE kind = 'partitions'",
            &[
                format!("public.{oldest_live}").into(),
                format!("ALTER TABLE public.nav_history_archive ATTACH PARTITION public.{oldest_live} {bounds}").into(),
            ],
        )
        .unwrap();
        let done: String = one(&format!(
            "SELECT status || ' ' || detail FROM upkeep.run_job((SELECT job_id FROM upkeep.jobs WHERE kind = 'partitions')) \
              WHERE target = 'public.{oldest_live}'"
        ));
        assert_eq!(done, "ok archive_table (finishing an interrupted move)");
        assert_eq!(count("SELECT * FROM upkeep.unfinished_actions"), 0);
        assert_eq!(
            one::<String>(&format!(
                "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = 'public.{oldest_live}'::regclass"
            )),
            "nav_history_archive"
        );
        assert_eq!(count("SELECT * FROM public.nav_history") + count("SELECT * FROM public.nav_history_archive"), rows);
    }

    #[pg_test]
    fn detach_drop_and_schema_modes() {
        six_months_of_history();
        keep_three_months("detach");
        assert_eq!(attached(), 5);
        let old: String = one("SELECT 'public.nav_history_p' || to_char(now() - interval '6 months', 'YYYY_MM')");
        assert_eq!(count(&format!("SELECT 1 FROM pg_class WHERE oid = '{old}'::regclass AND NOT relispartition")), 1);

        Spi::run("CREATE SCHEMA cold").unwrap();
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1, retention => '2 months', archive => 'schema:cold')").unwrap();
        assert_eq!(attached(), 4);
        assert_eq!(count("SELECT 1 FROM pg_class WHERE relnamespace = 'cold'::regnamespace AND relkind = 'r'"), 1);

        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1, retention => '1 month', archive => 'drop')").unwrap();
        assert_eq!(attached(), 3);
        // The newest partition is never archived, however short the retention.
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0, retention => '1 day', archive => 'drop')").unwrap();
        // Kept: the months whose end is later than a day ago (this one and
        // next month's, made by premake 1; last month's too on the 1st).
        let kept: i64 = one("SELECT count(*) FROM generate_series(date_trunc('month', now() - interval '1 day'), \
                    date_trunc('month', now()) + interval '1 month', interval '1 month')");
        assert_eq!(attached(), kept);
    }

    #[pg_test]
    fn every_object_and_view_column_reads_well_in_psql() {
        let missing: Option<String> = Spi::get_one(
            "SELECT string_agg(what, ', ') FROM ( \
               SELECT p.oid::regprocedure::text AS what FROM pg_proc p \
                WHERE p.pronamespace = 'upkeep'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL \
               UNION ALL \
               SELECT c.oid::regclass::text FROM pg_class c \
                WHERE c.relnamespace = 'upkeep'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p') \
                  AND obj_description(c.oid, 'pg_class') IS NULL \
               UNION ALL \
               SELECT c.relname || '.' || a.attname FROM pg_class c \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                WHERE c.relnamespace = 'upkeep'::regnamespace AND c.relkind IN ('r', 'v') \
                  AND col_description(c.oid, a.attnum) IS NULL) m",
        )
        .unwrap();
        assert_eq!(missing, None, "objects without COMMENT ON");
    }

    /// Columns, constraints and indexes of a partition, as text, without
    /// the partition's own name and pg_upkeep's bounds CHECK.
    fn shape(partition: &str) -> Vec<String> {
        let sql = format!(
            "SELECT replace(x, '{partition}', '<partition>') FROM ( \
               SELECT format('column %s %s notnull=%s default=%s identity=%s generated=%s collation=%s storage=%s local=%s inherited=%s', \
                             a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
                             a.attidentity, a.attgenerated, a.attcollation, a.attstorage, a.attislocal, a.attinhcount) \
                 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                WHERE a.attrelid = '{partition}'::regclass AND a.attnum > 0 AND NOT a.attisdropped \
               UNION ALL \
               SELECT format('constraint %s %s %s validated=%s local=%s inherited=%s noinherit=%s', \
                             conname, contype, pg_get_constraintdef(oid), convalidated, conislocal, coninhcount, connoinherit) \
                 FROM pg_constraint WHERE conrelid = '{partition}'::regclass AND conname <> 'pg_upkeep_bounds' \
               UNION ALL \
               SELECT 'index ' || pg_get_indexdef(indexrelid) || ' attached=' || \
                      EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = indexrelid) \
                 FROM pg_index WHERE indrelid = '{partition}'::regclass) s(x) ORDER BY 1"
        );
        Spi::connect(|c| c.select(&sql, None, &[]).unwrap().map(|r| r.get::<String>(1).unwrap().unwrap()).collect())
    }

    /// What pg_upkeep makes (CREATE TABLE ... LIKE, then ATTACH PARTITION,
    /// which takes no lock that blocks the application) has the columns,
    /// constraints and indexes PARTITION OF would give it, on every
    /// version: on 18, NOT NULL constraints (named, NOT VALID on the parent)
    /// live in pg_constraint, CHECK constraints may be NOT ENFORCED, and
    /// generated columns are virtual by default.
    #[pg_test]
    fn a_partition_made_by_pg_upkeep_is_shaped_like_one_made_by_partition_of() {
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16", feature = "pg17")))]
        let newer = ", doubled int GENERATED ALWAYS AS (qty * 2) VIRTUAL, \
                     CONSTRAINT note_required NOT NULL note NOT VALID, \
                     CONSTRAINT qty_small CHECK (qty < 1000) NOT ENFORCED";
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16", feature = "pg17"))]
        let newer = "";
        Spi::run(&format!(
            "CREATE TABLE public.funds (id int PRIMARY KEY); \
             CREATE TABLE public.orders (id bigint GENERATED ALWAYS AS IDENTITY, \
               fund_id int CONSTRAINT fund_required NOT NULL REFERENCES public.funds, \
               placed date NOT NULL, qty int NOT NULL DEFAULT 1 CHECK (qty > 0), \
               note text COLLATE \"C\", total numeric GENERATED ALWAYS AS (qty * 10) STORED{newer}, \
               PRIMARY KEY (id, placed)) PARTITION BY RANGE (placed); \
             ALTER TABLE public.orders ALTER COLUMN note SET STORAGE EXTERNAL; \
             CREATE INDEX ON public.orders (fund_id, placed); \
             CREATE TABLE public.orders_by_hand PARTITION OF public.orders \
               FOR VALUES FROM ('1999-01-01') TO ('1999-02-01'); \
             SELECT upkeep.pause_job(job_id) FROM upkeep.jobs WHERE kind = 'index_snapshot'"
        ))
        .unwrap();
        Spi::run("SELECT upkeep.manage_partitions('public.orders', 'placed', premake => 0)").unwrap();
        let made: String = one("SELECT 'orders_p' || to_char(now(), 'YYYY_MM')");
        let ours = shape(&made);
        // 18 keeps the named NOT NULL as a constraint; earlier, as attnotnull.
        let named =
            if cfg!(feature = "pg18") { "constraint fund_required" } else { "column fund_id integer notnull=t" };
        assert!(ours.iter().any(|x| x.starts_with(named)), "{ours:#?}");
        assert_eq!(ours, shape("orders_by_hand"));
        // And it takes rows as the parent does.
        Spi::run("INSERT INTO public.funds VALUES (1); INSERT INTO public.orders (fund_id, placed, qty, note) VALUES (1, now(), 3, 'n')")
            .unwrap();
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM public.{made} WHERE total = 30")), 1);
    }

    #[pg_test(error = "unknown granularity \"fortnight\" for table public.nav_history")]
    fn unknown_granularity_is_refused() {
        nav_history("public.nav_history");
        Spi::run("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', 'fortnight')").unwrap();
    }
}
