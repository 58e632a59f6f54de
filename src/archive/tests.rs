//! In-database tests of row archiving (each runs in one transaction).

#[allow(clippy::module_inception)]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{count, one};
    use pgrx::prelude::*;

    /// Every row of a table and its archive: count and an order-independent hash.
    fn content(columns: &str) -> (i64, String) {
        let sql = format!(
            "SELECT count(*), md5(string_agg(md5(r::text), '' ORDER BY md5(r::text))) FROM \
             (SELECT {columns} FROM public.events UNION ALL SELECT {columns} FROM public.events_archive) r"
        );
        let (n, h) = Spi::get_two::<i64, String>(&sql).unwrap();
        (n.unwrap(), h.unwrap())
    }

    /// 1000 events over 100 days back, an identity, a generated column and
    /// 10 rows with no time.
    fn events() {
        Spi::run(
            "CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                    at timestamptz, payload text, day date GENERATED ALWAYS AS ((at AT TIME ZONE 'UTC')::date) STORED);
             CREATE INDEX ON public.events (at);
             INSERT INTO public.events (at, payload)
             SELECT now() - g * interval '144 minutes', 'event ' || g FROM generate_series(1, 1000) g;
             INSERT INTO public.events (at, payload) SELECT NULL, 'no time ' || g FROM generate_series(1, 10) g;",
        )
        .unwrap();
    }

    /// A source Citus distributes is refused, nothing registered.
    #[pg_test(error = "table public.events is a Citus distributed or reference table, which pg_upkeep does not manage")]
    fn a_citus_distributed_source_is_refused() {
        events();
        crate::test_support::citus_distributes("public.events");
        Spi::run("SELECT upkeep.manage_archive('public.events', 'at', '30 days')").unwrap();
    }

    #[pg_test]
    fn old_rows_move_once_identities_kept_generated_recomputed_nulls_stay() {
        events();
        let job: i64 = one("SELECT upkeep.manage_archive('public.events', 'at', '30 days', batch_size => 128)");
        assert!(job > 0);
        // Registering moves nothing.
        assert_eq!(count("SELECT * FROM public.events"), 1010);
        let before: Vec<i64> =
            (0..1).map(|_| count("SELECT * FROM public.events WHERE at < now() - interval '30 days'")).collect();
        let all = "id, at, payload, day";
        Spi::run("CREATE TEMP TABLE original AS SELECT id, at, payload, day FROM public.events").unwrap();
        let (moved, status, detail): (i64, String, String) = {
            let row = Spi::get_three::<i64, String, String>(
                "SELECT rows_moved, status, detail FROM upkeep.archive('public.events')",
            )
            .unwrap();
            (row.0.unwrap(), row.1.unwrap(), row.2.unwrap())
        };
        assert_eq!(status, "ok");
        assert_eq!(moved, before[0]);
        assert!(detail.contains(&format!("{moved} rows archived")), "{detail}");
        assert_eq!(count("SELECT * FROM public.events WHERE at < now() - interval '30 days'"), 0);
        // Rows with no time never move.
        assert_eq!(count("SELECT * FROM public.events WHERE at IS NULL"), 10);
        // Nothing lost, nothing doubled, every value kept (the identity too,
        // and the generated column computed again to the same value).
        let expected = Spi::get_two::<i64, String>(&format!(
            "SELECT count(*), md5(string_agg(md5(r::text), '' ORDER BY md5(r::text))) FROM (SELECT {all} FROM original) r"
        ))
        .unwrap();
        assert_eq!(content(all), (expected.0.unwrap(), expected.1.unwrap()));
        assert_eq!(count("SELECT id FROM public.events INTERSECT SELECT id FROM public.events_archive"), 0);
        // The archive is shaped like the source, with its generated column.
        assert_eq!(
            one::<String>(
                "SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'public.events_archive'::regclass AND attname = 'day'"
            ),
            "s"
        );
        // Status: the counter, no old rows left.
        let (archived, st) =
            Spi::get_two::<i64, String>("SELECT rows_archived, status FROM upkeep.archive_status WHERE mode = 'rows'")
                .unwrap();
        assert_eq!(archived, Some(moved));
        assert_eq!(st.as_deref(), Some("ok"));
        // A second run has nothing to move and writes nothing to the run log.
        let runs = count("SELECT * FROM upkeep.job_runs");
        assert_eq!(one::<i64>("SELECT rows_moved FROM upkeep.archive('public.events')"), 0);
        assert_eq!(count("SELECT * FROM upkeep.job_runs"), runs);
        // run_job and run_maintenance run archive jobs too.
        assert_eq!(count(&format!("SELECT * FROM upkeep.run_job({job})")), 1);
        assert_eq!(one::<String>("SELECT kind FROM upkeep.jobs WHERE kind <> 'index_snapshot'"), "archive");
    }

    #[pg_test]
    fn a_column_added_to_the_source_follows_into_the_archive() {
        events();
        Spi::run("SELECT upkeep.manage_archive('public.events', 'at', '60 days')").unwrap();
        Spi::run("SELECT * FROM upkeep.archive('public.events')").unwrap();
        Spi::run(
            "ALTER TABLE public.events ADD COLUMN source text DEFAULT 'app';
             UPDATE public.events SET at = at - interval '60 days' WHERE payload = 'event 1'",
        )
        .unwrap();
        let sql: String = one("SELECT sql FROM upkeep.archive('public.events')");
        assert!(sql.contains(r#"ALTER TABLE "public"."events_archive" ADD COLUMN "source" text"#), "{sql}");
        assert_eq!(one::<String>("SELECT source FROM public.events_archive WHERE payload = 'event 1'"), "app");
    }

    #[pg_test]
    fn the_archive_table_can_be_named_and_is_owned_by_the_source_owner() {
        events();
        Spi::run(
            "CREATE ROLE upkeep_archive_owner; ALTER TABLE public.events OWNER TO upkeep_archive_owner; CREATE SCHEMA vault;
             GRANT CREATE, USAGE ON SCHEMA vault TO upkeep_archive_owner",
        )
        .unwrap();
        Spi::run(
            "SELECT upkeep.manage_archive('public.events', 'at', '30 days', archive_table => 'vault.\"Old Events\"')",
        )
        .unwrap();
        Spi::run("SELECT * FROM upkeep.archive()").unwrap();
        assert_eq!(
            one::<String>(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'vault.\"Old Events\"'::regclass"
            ),
            "upkeep_archive_owner"
        );
        assert!(count("SELECT * FROM vault.\"Old Events\"") > 0);
    }

    /// An UNLOGGED table stays unlogged in everything made for it: a row
    /// archive here, partitions and `<parent>_archive` below.
    #[pg_test]
    fn a_row_archive_of_an_unlogged_table_is_unlogged() {
        Spi::run(
            "CREATE UNLOGGED TABLE public.hits (id int, at timestamptz NOT NULL); \
             INSERT INTO public.hits SELECT g, now() - g * interval '1 day' FROM generate_series(1, 50) g",
        )
        .unwrap();
        Spi::run("SELECT upkeep.manage_archive('public.hits', 'at', '10 days')").unwrap();
        Spi::run("SELECT count(*) FROM upkeep.archive('public.hits')").unwrap();
        assert_eq!(count("SELECT 1 FROM public.hits_archive"), 40, "rows moved");
        assert_eq!(
            one::<String>("SELECT relpersistence::text FROM pg_class WHERE oid = 'public.hits_archive'::regclass"),
            "u"
        );
    }

    /// PostgreSQL 15-17 allow an UNLOGGED partitioned table (18 refuses
    /// one): its partitions and `<parent>_archive` are unlogged too.
    #[cfg(not(feature = "pg18"))]
    #[pg_test]
    fn what_serves_an_unlogged_partitioned_table_is_unlogged_too() {
        Spi::run(
            "CREATE UNLOGGED TABLE public.scratch (d date NOT NULL, v int) PARTITION BY RANGE (d); \
             CREATE UNLOGGED TABLE public.scratch_old PARTITION OF public.scratch FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')",
        )
        .unwrap();
        Spi::run("SELECT upkeep.manage_partitions('public.scratch', 'd', premake => 2, retention => '1 year')")
            .unwrap();
        Spi::run("SELECT count(*) FROM upkeep.archive('public.scratch')").unwrap();
        let logged = "SELECT c.oid::regclass::text FROM pg_class c \
                       WHERE (c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent IN ('public.scratch'::regclass, 'public.scratch_archive'::regclass)) \
                              OR c.oid = 'public.scratch_archive'::regclass) \
                         AND c.relpersistence <> 'u'";
        assert_eq!(count(logged), 0, "a logged table among those made for an unlogged one");
        assert!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.scratch'::regclass") >= 3);
        assert_eq!(count("SELECT 1 FROM pg_inherits WHERE inhparent = 'public.scratch_archive'::regclass"), 1);
    }

    /// Rows another table still references (a NO ACTION foreign key) stay
    /// and the rest move, instead of every batch failing.
    #[pg_test]
    fn referenced_rows_are_held_back_and_the_rest_move() {
        customers_and_orders();
        Spi::run("SELECT upkeep.manage_archive('public.customers', 'created', '30 days', batch_size => 7)").unwrap();
        // Alone: the ten referenced customers stay, the other 90 move.
        let failed = count("SELECT 1 FROM upkeep.archive('public.customers') WHERE status <> 'ok'");
        assert_eq!(failed, 0);
        assert_eq!(count("SELECT 1 FROM public.customers"), 10);
        assert_eq!(count("SELECT 1 FROM public.customers_archive"), 90);
        let (held, by) = Spi::get_two::<i64, String>(
            "SELECT rows_held_back, held_back_by FROM upkeep.archive_status WHERE source = 'customers'",
        )
        .unwrap();
        assert_eq!(held, Some(10));
        assert_eq!(by.as_deref(), Some("10 by orders_customer_id_fkey of public.orders"));
        let status: String = one("SELECT status FROM upkeep.archive_status WHERE source = 'customers'");
        assert_eq!(status, "held back");
    }

    /// Both tables archived: the old orders leave first and free five
    /// customers, in the same run. (A test of its own: upkeep.archive()
    /// takes the kinds' locks in their order, which a test that took the
    /// archive lock first would invert against other tests running.)
    #[pg_test]
    fn the_referencing_table_is_archived_first_and_frees_rows() {
        customers_and_orders();
        Spi::run("SELECT upkeep.manage_archive('public.customers', 'created', '30 days', batch_size => 7)").unwrap();
        Spi::run("SELECT upkeep.manage_archive('public.orders', 'at', '30 days')").unwrap();
        let ran: Vec<String> = Spi::connect(|c| {
            c.select("SELECT target FROM upkeep.archive() WHERE action = 'archive_rows' AND status = 'ok'", None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect()
        });
        assert_eq!(ran, ["public.orders", "public.customers"], "the referencing table first");
        assert_eq!(count("SELECT 1 FROM public.orders_archive"), 5);
        assert_eq!(count("SELECT 1 FROM public.customers"), 5);
        assert_eq!(count("SELECT 1 FROM public.customers_archive"), 95);
        let held: i64 = one("SELECT rows_held_back FROM upkeep.archive_status WHERE source = 'customers'");
        assert_eq!(held, 5);
    }

    /// 100 old customers; 5 old orders reference customers 1-5, 5 new ones 6-10.
    fn customers_and_orders() {
        Spi::run(
            "CREATE TABLE public.customers (id int PRIMARY KEY, created timestamptz NOT NULL); \
             INSERT INTO public.customers SELECT g, now() - interval '1 year' FROM generate_series(1, 100) g; \
             CREATE TABLE public.orders (id int PRIMARY KEY, customer_id int REFERENCES public.customers, at timestamptz NOT NULL); \
             INSERT INTO public.orders SELECT g, g, now() - interval '200 days' FROM generate_series(1, 5) g; \
             INSERT INTO public.orders SELECT g, g, now() FROM generate_series(6, 10) g",
        )
        .unwrap();
    }

    /// PostgreSQL 18's virtual generated columns are computed when read:
    /// the archive created LIKE the source computes them too, and an
    /// archive that has the column as a plain one keeps the values.
    #[cfg(feature = "pg18")]
    #[pg_test]
    fn virtual_generated_columns_are_computed_by_a_new_archive_and_kept_by_a_plain_one() {
        Spi::run(
            "CREATE TABLE public.events (id int PRIMARY KEY, at timestamptz NOT NULL, qty int NOT NULL, \
                    doubled int GENERATED ALWAYS AS (qty * 2) VIRTUAL); \
             INSERT INTO public.events (id, at, qty) SELECT g, now() - g * interval '1 day', g FROM generate_series(1, 60) g",
        )
        .unwrap();
        assert_eq!(one::<String>("SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'public.events'::regclass AND attname = 'doubled'"), "v");
        Spi::run("SELECT upkeep.manage_archive('public.events', 'at', '30 days')").unwrap();
        assert_eq!(one::<String>("SELECT status FROM upkeep.archive('public.events')"), "ok");
        assert_eq!(count("SELECT * FROM public.events_archive"), 30);
        assert_eq!(count("SELECT * FROM public.events_archive WHERE doubled = qty * 2"), 30);
        assert_eq!(
            one::<String>("SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'public.events_archive'::regclass AND attname = 'doubled'"),
            "v"
        );
        // Into an archive whose column is a plain one: the values are copied.
        Spi::run(
            "CREATE TABLE public.gauges (id int PRIMARY KEY, at timestamptz NOT NULL, qty int NOT NULL, \
                    doubled int GENERATED ALWAYS AS (qty * 2) VIRTUAL); \
             INSERT INTO public.gauges (id, at, qty) SELECT g, now() - g * interval '1 day', g FROM generate_series(1, 60) g; \
             CREATE TABLE public.gauges_kept (id int, at timestamptz, qty int, doubled int); \
             SELECT upkeep.manage_archive('public.gauges', 'at', '30 days', archive_table => 'public.gauges_kept')",
        )
        .unwrap();
        assert_eq!(one::<String>("SELECT status FROM upkeep.archive('public.gauges')"), "ok");
        assert_eq!(count("SELECT * FROM public.gauges_kept WHERE doubled = qty * 2 AND doubled IS NOT NULL"), 30);
    }
}
