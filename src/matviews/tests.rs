//! In-database tests of materialized view maintenance. Each runs in one
//! transaction; change tracking tells a change made after a refresh in the
//! same transaction by its command, so these see what separate
//! transactions would (the cluster tests check those too).

#[allow(clippy::module_inception)]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::one;
    use pgrx::prelude::*;

    /// Trades (partitioned) and funds, a plain view joining them, a view
    /// over the view, and a view over that one.
    fn schema(prefix: &str) {
        Spi::run(&format!(
            "CREATE TABLE public.{prefix}_trades (fund int, amount numeric, at date) PARTITION BY RANGE (at);
             CREATE TABLE public.{prefix}_trades_2026 PARTITION OF public.{prefix}_trades
                FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
             CREATE TABLE public.{prefix}_funds (id int PRIMARY KEY, name text);
             CREATE TABLE public.{prefix}_other (x int);
             INSERT INTO public.{prefix}_funds SELECT g, 'fund ' || g FROM generate_series(1, 5) g;
             INSERT INTO public.{prefix}_trades SELECT g % 5 + 1, g, '2026-03-01' FROM generate_series(1, 100) g;
             CREATE VIEW public.{prefix}_named AS
               SELECT t.*, f.name FROM public.{prefix}_trades t JOIN public.{prefix}_funds f ON f.id = t.fund;
             CREATE MATERIALIZED VIEW public.{prefix}_totals AS
               SELECT name, sum(amount) AS total, count(*) AS n FROM public.{prefix}_named GROUP BY name;
             CREATE UNIQUE INDEX ON public.{prefix}_totals (name);
             CREATE MATERIALIZED VIEW public.{prefix}_top AS SELECT name, total FROM public.{prefix}_totals WHERE total > 0;
             CREATE UNIQUE INDEX ON public.{prefix}_top (name);
             CREATE MATERIALIZED VIEW public.{prefix}_best AS SELECT max(total) AS best FROM public.{prefix}_top;
             CREATE UNIQUE INDEX ON public.{prefix}_best (best);"
        ))
        .unwrap();
    }

    /// (view, status) of a refresh_matviews call, in order.
    fn refresh(args: &str) -> Vec<(String, String, String)> {
        Spi::connect(|c| {
            c.select(
                &format!("SELECT matview, status, coalesce(reason, error, '') FROM upkeep.refresh_matviews({args})"),
                None,
                &[],
            )
            .unwrap()
            .map(|r| {
                (
                    r.get::<String>(1).unwrap().unwrap(),
                    r.get::<String>(2).unwrap().unwrap(),
                    r.get::<String>(3).unwrap().unwrap(),
                )
            })
            .collect()
        })
    }

    /// Runs `change` and asserts the next run refreshes `view` naming
    /// `cause`, and the run after that skips it.
    fn refreshed_after(view: &str, change: &str, cause: &str) {
        Spi::run(change).unwrap();
        let runs = refresh(&format!("'{view}'"));
        assert_eq!(runs[0].0, view, "{runs:?}");
        assert_eq!(runs[0].1, "refreshed", "after {change}: {runs:?}");
        assert!(runs[0].2.contains(cause), "after {change}: {runs:?}");
        let again = refresh(&format!("'{view}'"));
        assert_eq!(again[0].1, "skipped", "no change after {change}: {again:?}");
        assert!(again[0].2.contains("nothing it reads changed"), "{again:?}");
    }

    #[pg_test]
    fn every_kind_of_change_refreshes_no_change_skips_force_refreshes() {
        schema("k");
        let job: i64 = one("SELECT upkeep.manage_matview('public.k_totals')");
        // The job the policy table and upkeep.jobs name.
        assert_eq!(
            job,
            one::<i64>("SELECT job_id FROM upkeep.matview_policies WHERE matview = 'public.k_totals'::regclass")
        );
        assert_eq!(
            one::<String>(&format!("SELECT kind || ' ' || target FROM upkeep.jobs WHERE job_id = {job}")),
            "matview k_totals"
        );
        let first = refresh("'public.k_totals'");
        assert_eq!(first[0].1, "refreshed");
        assert_eq!(first[0].2, "first refresh by pg_upkeep");
        // The tables it reads through the plain view and the partitions are tracked.
        let tracked: i64 = one(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'upkeep_track_changes' AND tgenabled = 'A' \
               AND tgrelid IN ('public.k_trades'::regclass, 'public.k_trades_2026'::regclass, 'public.k_funds'::regclass)",
        );
        assert_eq!(tracked, 3);
        let again = refresh("'public.k_totals'");
        assert_eq!(again[0].1, "skipped", "{again:?}");
        // A table it does not read changes: still skipped.
        Spi::run("INSERT INTO public.k_other VALUES (1)").unwrap();
        assert_eq!(refresh("'public.k_totals'")[0].1, "skipped");

        refreshed_after(
            "public.k_totals",
            "INSERT INTO public.k_trades VALUES (1, 5, '2026-04-01')",
            "public.k_trades",
        );
        refreshed_after("public.k_totals", "UPDATE public.k_funds SET name = 'renamed' WHERE id = 2", "public.k_funds");
        refreshed_after("public.k_totals", "DELETE FROM public.k_trades WHERE amount < 10", "public.k_trades");
        // A change made straight in a partition.
        refreshed_after(
            "public.k_totals",
            "INSERT INTO public.k_trades_2026 VALUES (3, 7, '2026-05-01')",
            "public.k_trades_2026",
        );
        // Statistics resets do not hide a change.
        refreshed_after(
            "public.k_totals",
            "UPDATE public.k_trades SET amount = amount + 1; SELECT pg_stat_reset()",
            "k_trades",
        );
        refreshed_after("public.k_totals", "TRUNCATE public.k_trades", "public.k_trades");
        // An update that changes nothing is still a change to the table.
        refreshed_after("public.k_totals", "UPDATE public.k_funds SET name = name WHERE false", "public.k_funds");
        // The view has what its query returns now.
        let (n, expected): (i64, i64) =
            (one("SELECT count(*) FROM public.k_totals"), one("SELECT count(DISTINCT name) FROM public.k_named"));
        assert_eq!(n, expected);

        // force refreshes although nothing changed.
        let forced = refresh("'public.k_totals', force => true");
        assert_eq!((forced[0].1.as_str(), forced[0].2.as_str()), ("refreshed", "forced"));
        // A change rolled back in a subtransaction may refresh (unsure), never hide a later one.
        Spi::run(
            "DO $$ BEGIN BEGIN INSERT INTO public.k_funds VALUES (99, 'gone'); RAISE EXCEPTION 'undo'; \
             EXCEPTION WHEN OTHERS THEN NULL; END; END $$",
        )
        .unwrap();
        refreshed_after("public.k_totals", "INSERT INTO public.k_funds VALUES (98, 'kept')", "public.k_funds");
    }

    #[pg_test]
    fn a_change_seen_only_through_a_plain_view_and_functions_that_hide_tables() {
        schema("v");
        Spi::run(
            "CREATE TABLE public.v_rates (fund int, rate numeric);
             CREATE VIEW public.v_rated AS SELECT r.fund, r.rate FROM public.v_rates r;
             CREATE VIEW public.v_outer AS SELECT * FROM public.v_rated;
             CREATE MATERIALIZED VIEW public.v_rate_mv AS SELECT fund, max(rate) AS rate FROM public.v_outer GROUP BY fund;
             CREATE UNIQUE INDEX ON public.v_rate_mv (fund);
             CREATE FUNCTION public.v_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM public.v_rates';
             CREATE MATERIALIZED VIEW public.v_fn_mv AS SELECT 1 AS id, public.v_count() AS n;
             CREATE UNIQUE INDEX ON public.v_fn_mv (id);
             CREATE VIEW public.v_recent AS SELECT * FROM public.v_trades WHERE at > current_date - 30;
             CREATE MATERIALIZED VIEW public.v_clock_mv AS SELECT fund, count(*) AS n FROM public.v_recent GROUP BY fund;
             CREATE UNIQUE INDEX ON public.v_clock_mv (fund);
             CREATE MATERIALIZED VIEW public.v_now_mv AS SELECT fund, count(*) AS n FROM public.v_trades
                                                          WHERE at > now() - interval '1 day' GROUP BY fund;
             CREATE UNIQUE INDEX ON public.v_now_mv (fund);",
        )
        .unwrap();
        Spi::run(
            "SELECT upkeep.manage_matview('public.v_rate_mv'), upkeep.manage_matview('public.v_fn_mv'), \
                    upkeep.manage_matview('public.v_clock_mv'), upkeep.manage_matview('public.v_now_mv')",
        )
        .unwrap();
        refresh("NULL, force => true");
        assert_eq!(refresh("'public.v_rate_mv'")[0].1, "skipped");
        refreshed_after("public.v_rate_mv", "INSERT INTO public.v_rates VALUES (1, 0.5)", "public.v_rates");
        // A plain view it reads redefined, over the same table: what it
        // reads is another query.
        refreshed_after(
            "public.v_rate_mv",
            "CREATE OR REPLACE VIEW public.v_rated AS SELECT r.fund, r.rate * 2 AS rate FROM public.v_rates r",
            "a view it reads redefined",
        );
        assert_eq!(one::<f64>("SELECT rate::float8 FROM public.v_rate_mv WHERE fund = 1"), 1.0);
        // A function may read any table: refreshed whenever due, and the log says why.
        let runs = refresh("'public.v_fn_mv'");
        assert_eq!(runs[0].1, "refreshed");
        assert!(runs[0].2.starts_with("refreshed when unsure: calls public.v_count()"), "{runs:?}");
        let (changed, hint): (Option<bool>, String) = {
            let (c, h) = Spi::get_two::<bool, String>(
                "SELECT changed_since, hint FROM upkeep.matview_status WHERE matview = 'public.v_fn_mv'::regclass",
            )
            .unwrap();
            (c, h.unwrap())
        };
        assert_eq!(changed, None);
        assert!(hint.contains("calls public.v_count()"), "{hint}");
        // So may the clock: a view of the last 30 days, through a plain view.
        let runs = refresh("'public.v_clock_mv'");
        assert_eq!(runs[0].1, "refreshed");
        assert!(
            runs[0].2.contains("v_recent uses current_date, whose result changes without any table changing"),
            "{runs:?}"
        );
        // A call of a built-in function leaves no trace in pg_depend: it is
        // found in the view's stored rule.
        let runs = refresh("'public.v_now_mv'");
        assert_eq!(runs[0].1, "refreshed");
        assert!(runs[0].2.contains("v_now_mv uses now, whose result changes without any table changing"), "{runs:?}");
        // And again at the next run: what its refresh recorded does not
        // pass for a view off the clock.
        for view in ["public.v_now_mv", "public.v_clock_mv"] {
            let runs = refresh(&format!("'{view}'"));
            assert_eq!(runs[0].1, "refreshed", "{runs:?}");
            assert!(runs[0].2.contains("whose result changes without any table changing"), "{runs:?}");
        }
    }

    #[pg_test]
    fn a_chain_refreshes_in_order_once_each() {
        schema("c");
        // Registered from the end of the chain, so job order is not dependency order.
        for v in ["c_best", "c_top", "c_totals"] {
            Spi::run(&format!("SELECT upkeep.manage_matview('public.{v}')")).unwrap();
        }
        let first = refresh("");
        let names: Vec<&str> = first.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["public.c_totals", "public.c_top", "public.c_best"], "{first:?}");
        // A change to the base: all three are due now; each refreshes once, in order,
        // the later ones because the one before them was refreshed.
        Spi::run("INSERT INTO public.c_trades VALUES (1, 1000000, '2026-06-01'); UPDATE upkeep.job_state SET next_run = NULL").unwrap();
        let runs = refresh("");
        assert_eq!(
            runs.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect::<Vec<_>>(),
            [("public.c_totals", "refreshed"), ("public.c_top", "refreshed"), ("public.c_best", "refreshed")],
            "{runs:?}"
        );
        assert!(runs[1].2.contains("public.c_totals"), "{runs:?}");
        assert_eq!(one::<i64>("SELECT count(*) FROM public.c_best WHERE best >= 1000000"), 1);
        // Only the first is due: the others follow it.
        Spi::run(
            "INSERT INTO public.c_trades VALUES (2, 5000000, '2026-06-01'); \
             UPDATE upkeep.job_state SET next_run = now() + interval '1 hour'; \
             UPDATE upkeep.job_state SET next_run = NULL WHERE job_id = (SELECT job_id FROM upkeep.matview_policies WHERE matview = 'public.c_totals'::regclass)",
        )
        .unwrap();
        let runs = refresh("");
        assert_eq!(runs.iter().filter(|r| r.1 == "refreshed").count(), 3, "{runs:?}");
        assert_eq!(one::<i64>("SELECT count(*) FROM public.c_best WHERE best >= 5000000"), 1);
        // The run log has one refresh per view per run, in order.
        let log: Vec<String> = Spi::connect(|c| {
            c.select("SELECT target FROM upkeep.job_runs WHERE action = 'refresh_matview' ORDER BY run_id", None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect()
        });
        assert_eq!(log.len(), 9, "{log:?}");
        assert!(log.chunks(3).all(|c| c == ["public.c_totals", "public.c_top", "public.c_best"]), "{log:?}");
    }

    /// Change records are kept for exactly what managed views read: a
    /// refresh of a materialized view read through a plain view is
    /// recorded, one nobody manages a reader of is not, a write to a
    /// partition of a table read through a plain view is kept until no
    /// managed view reads it any more, and seen one-off records go.
    #[pg_test]
    fn change_records_are_kept_for_what_managed_views_read_and_pruned_otherwise() {
        schema("k");
        Spi::run(
            "CREATE VIEW public.k_top_v AS SELECT * FROM public.k_top;
             CREATE MATERIALIZED VIEW public.k_over AS SELECT count(*) AS n FROM public.k_top_v;
             CREATE UNIQUE INDEX ON public.k_over (n);
             CREATE MATERIALIZED VIEW public.k_alone AS SELECT count(*) AS n FROM public.k_other;
             SELECT upkeep.manage_matview('public.k_over'), upkeep.manage_matview('public.k_totals');",
        )
        .unwrap();
        refresh("");
        let rows =
            |rel: &str| one::<i64>(&format!("SELECT count(*) FROM upkeep.changes WHERE relid = '{rel}'::regclass"));
        Spi::run("REFRESH MATERIALIZED VIEW public.k_top; REFRESH MATERIALIZED VIEW public.k_alone").unwrap();
        assert_eq!(rows("public.k_top"), 1, "read by k_over through k_top_v");
        assert_eq!(rows("public.k_alone"), 0, "no managed view reads it");
        Spi::run("INSERT INTO public.k_trades_2026 VALUES (1, 1, '2026-05-01')").unwrap();
        assert_eq!(rows("public.k_trades_2026"), 1);
        // k_over sees the refresh of k_top: its one-off record goes; the
        // partition's record stays, as k_totals reads the partition.
        let runs = refresh("'public.k_over'");
        assert_eq!(runs[0].1, "refreshed", "{runs:?}");
        assert!(runs[0].2.contains("public.k_top"), "{runs:?}");
        assert_eq!(rows("public.k_top"), 0);
        assert_eq!(rows("public.k_trades_2026"), 1);
        // With k_totals no longer managed, nothing reads the partition.
        Spi::run("SELECT upkeep.unmanage_matview('public.k_totals')").unwrap();
        refresh("'public.k_over'");
        assert_eq!(rows("public.k_trades_2026"), 0);
    }

    #[pg_test]
    fn an_unpopulated_view_gets_one_plain_refresh_then_concurrent_ones() {
        schema("p");
        Spi::run("REFRESH MATERIALIZED VIEW public.p_totals WITH NO DATA").unwrap();
        Spi::run("SELECT upkeep.manage_matview('public.p_totals', every => '5 minutes')").unwrap();
        let status: String = one("SELECT status FROM upkeep.matview_status");
        assert_eq!(status, "not populated");
        let runs = refresh("");
        assert_eq!(runs[0].1, "refreshed");
        assert!(runs[0].2.contains("not populated yet, so one plain refresh first"), "{runs:?}");
        let sql: String =
            one("SELECT sql FROM upkeep.job_runs WHERE action = 'refresh_matview' ORDER BY run_id DESC LIMIT 1");
        assert!(sql.contains("REFRESH MATERIALIZED VIEW \"public\".\"p_totals\""), "{sql}");
        assert!(one::<bool>("SELECT relispopulated FROM pg_class WHERE oid = 'public.p_totals'::regclass"));
        let forced = refresh("'public.p_totals', force => true");
        assert_eq!(forced[0].1, "refreshed");
        let sql: String =
            one("SELECT sql FROM upkeep.job_runs WHERE action = 'refresh_matview' ORDER BY run_id DESC LIMIT 1");
        assert!(sql.contains("REFRESH MATERIALIZED VIEW CONCURRENTLY"), "{sql}");
        // Status after a refresh; next due follows `every`.
        let (status, due_in): (String, bool) = {
            let (s, d) = Spi::get_two::<String, bool>(
                "SELECT status, next_due BETWEEN now() + interval '4 minutes' AND now() + interval '6 minutes' \
                   FROM upkeep.matview_status",
            )
            .unwrap();
            (s.unwrap(), d.unwrap())
        };
        assert_eq!(status, "ok");
        assert!(due_in);
    }

    #[pg_test]
    fn dropped_views_are_reported_others_go_on_and_tracking_is_removed() {
        schema("d");
        Spi::run("SELECT upkeep.manage_matview('public.d_totals'), upkeep.manage_matview('public.d_best')").unwrap();
        refresh("");
        let oid: pg_sys::Oid = one("SELECT 'public.d_best'::regclass::oid");
        // One view is dropped, the other renamed (which is simply followed).
        Spi::run(
            "DROP MATERIALIZED VIEW public.d_best; ALTER MATERIALIZED VIEW public.d_totals RENAME TO d_sums; \
             INSERT INTO public.d_funds VALUES (42, 'new')",
        )
        .unwrap();
        Spi::run("UPDATE upkeep.job_state SET next_run = NULL").unwrap();
        let runs = refresh("");
        let by_view: Vec<(&str, &str)> = runs.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
        assert!(by_view.contains(&("public.d_sums", "refreshed")), "{runs:?}");
        let dropped = runs.iter().find(|r| r.1 == "failed").expect("the dropped view is reported");
        assert!(dropped.2.contains("no longer exists") && dropped.2.contains("unmanage_matview"), "{runs:?}");
        assert_eq!(
            one::<String>("SELECT status FROM upkeep.matview_status WHERE NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = matview)"),
            "dropped"
        );
        Spi::run("SELECT upkeep.unmanage_matview('public.d_sums')").unwrap();
        // The next run stops tracking tables no managed view reads (while
        // a policy is left: the dropped view's, which reads nothing)...
        let untracked =
            "SELECT count(*) FROM upkeep.run_maintenance() WHERE action = 'untrack_changes' AND status = 'ok'";
        assert_eq!(one::<i64>(untracked), 3);
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgname = 'upkeep_track_changes'"), 0);
        // ...and, with no policy left, has nothing more to stop.
        Spi::run(&format!("SELECT upkeep.unmanage_matview({})", oid.to_u32())).unwrap();
        assert_eq!(one::<i64>(untracked), 0);
    }

    /// A view whose function names its table without the schema: pg_upkeep
    /// refreshes with search_path = pg_catalog, pg_temp on every version
    /// (PostgreSQL 17 on does the same for any REFRESH), so the refresh
    /// fails, and the error says why and what to change.
    #[pg_test]
    fn a_function_that_names_its_table_without_the_schema_fails_with_a_hint_on_every_version() {
        Spi::run(
            "CREATE TABLE public.stock (qty int); INSERT INTO public.stock VALUES (2), (3); \
             CREATE FUNCTION public.total_qty() RETURNS bigint LANGUAGE plpgsql STABLE \
               AS $$ BEGIN RETURN (SELECT sum(qty) FROM stock); END $$; \
             CREATE MATERIALIZED VIEW public.stock_total AS SELECT public.total_qty() AS n WITH NO DATA; \
             SELECT upkeep.manage_matview('public.stock_total', concurrently => false)",
        )
        .unwrap();
        let (status, error) =
            Spi::get_two::<String, String>("SELECT status, error FROM upkeep.refresh_matviews('public.stock_total')")
                .unwrap();
        assert_eq!(status.as_deref(), Some("failed"));
        let error = error.unwrap_or_default();
        assert!(error.contains("relation \"stock\" does not exist"), "{error}");
        assert!(error.contains("search_path = pg_catalog, pg_temp"), "{error}");
        // With the name qualified, the same view refreshes.
        Spi::run(
            "CREATE OR REPLACE FUNCTION public.total_qty() RETURNS bigint LANGUAGE plpgsql STABLE \
               AS $$ BEGIN RETURN (SELECT sum(qty) FROM public.stock); END $$",
        )
        .unwrap();
        assert_eq!(refresh("'public.stock_total'")[0].1, "refreshed");
        assert_eq!(Spi::get_one::<i64>("SELECT n FROM public.stock_total").unwrap(), Some(5));
    }

    /// PostgreSQL 17's MAINTAIN privilege lets a role refresh a view it does
    /// not own, but a policy installs change tracking on the view's tables
    /// and runs as the owner: registering one still takes the owner.
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    #[pg_test(error = "must be owner of table public.stock_total")]
    fn maintain_lets_a_role_refresh_by_hand_but_not_register_a_policy() {
        Spi::run(
            "CREATE TABLE public.stock (qty int); \
             CREATE MATERIALIZED VIEW public.stock_total AS SELECT sum(qty) AS n FROM public.stock; \
             CREATE ROLE upkeep_maintainer; \
             GRANT MAINTAIN ON public.stock_total TO upkeep_maintainer; \
             GRANT USAGE ON SCHEMA upkeep TO upkeep_maintainer; \
             SET ROLE upkeep_maintainer; \
             REFRESH MATERIALIZED VIEW public.stock_total",
        )
        .unwrap();
        Spi::run("SELECT upkeep.manage_matview('public.stock_total')").unwrap();
    }
}
