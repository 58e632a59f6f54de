//! Materialized views on real clusters: bad input, readers during a
//! concurrent refresh by a worker, a refresh never started twice, and a
//! chain of views refreshed in order by the workers after changes
//! committed by other sessions.

use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use upkeep_cluster_tests::{assert_refused, count, error_of, ran_again, wait_for, Cluster};

const CHAIN: &str = "
CREATE TABLE public.trades (fund int NOT NULL, amount numeric NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE public.trades_2026 PARTITION OF public.trades FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.funds (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO public.funds SELECT g, 'fund ' || g FROM generate_series(1, 20) g;
INSERT INTO public.trades SELECT g % 20 + 1, g, '2026-02-01' FROM generate_series(1, 2000) g;
CREATE VIEW public.named_trades AS SELECT t.*, f.name FROM public.trades t JOIN public.funds f ON f.id = t.fund;
CREATE MATERIALIZED VIEW public.fund_totals AS SELECT name, sum(amount) AS total FROM public.named_trades GROUP BY name;
CREATE UNIQUE INDEX ON public.fund_totals (name);
CREATE MATERIALIZED VIEW public.fund_top AS SELECT name, total FROM public.fund_totals ORDER BY total DESC LIMIT 5;
CREATE UNIQUE INDEX ON public.fund_top (name);
CREATE MATERIALIZED VIEW public.fund_best AS SELECT max(total) AS best FROM public.fund_top;
CREATE UNIQUE INDEX ON public.fund_best (best);
";

/// Everything a bad call could have changed: policies, run log, triggers, relations.
fn snapshot(c: &mut Client) -> String {
    c.query_one(
        "SELECT (SELECT coalesce(md5(string_agg(p::text, ',' ORDER BY job_id)), '') FROM upkeep.matview_policies p) || '/' || \
                (SELECT count(*) FROM upkeep.job_runs) || '/' || \
                (SELECT count(*) FROM pg_trigger) || '/' || \
                (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn bad_input_gets_an_error_with_a_hint_and_changes_nothing() {
    let cluster = Cluster::start("matviews-bad-input", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(CHAIN).unwrap();
    c.batch_execute(
        "CREATE MATERIALIZED VIEW public.no_key AS SELECT fund, sum(amount) AS s FROM public.trades GROUP BY fund;
         CREATE MATERIALIZED VIEW public.no_group AS SELECT fund, amount FROM public.trades;
         CREATE ROLE someone_else LOGIN; GRANT USAGE ON SCHEMA upkeep TO someone_else;",
    )
    .unwrap();
    let cases: &[(&str, &str)] = &[
        ("SELECT upkeep.manage_matview('public.funds')", "public.funds is not a materialized view"),
        ("SELECT upkeep.manage_matview('public.named_trades')", "public.named_trades is not a materialized view"),
        ("SELECT upkeep.manage_matview('public.nope')", "public.nope"),
        ("SELECT upkeep.manage_matview(NULL::regclass)", "matview must not be NULL"),
        (
            "SELECT upkeep.manage_matview('public.fund_totals', '0 seconds')",
            "every for public.fund_totals must be a positive interval",
        ),
        ("SELECT upkeep.manage_matview('public.fund_totals', '-1 hour')", "must be a positive interval"),
        ("SELECT upkeep.manage_matview('public.fund_totals', NULL)", "must be a positive interval"),
        ("SELECT upkeep.manage_matview('public.fund_totals', concurrently => NULL)", "must not be NULL"),
        ("SELECT upkeep.manage_matview('public.no_key')", "public.no_key cannot be refreshed concurrently"),
        ("SELECT upkeep.unmanage_matview('public.fund_totals')", "public.fund_totals has no policy"),
        ("SELECT upkeep.unmanage_matview('public.nope')", "public.nope"),
        ("SELECT upkeep.unmanage_matview(NULL::regclass)", "matview must not be NULL"),
        ("SELECT * FROM upkeep.refresh_matviews('public.fund_totals')", "public.fund_totals has no policy"),
        ("SELECT * FROM upkeep.refresh_matviews('public.nope')", "public.nope"),
    ];
    let before = assert_refused(&mut c, cases, snapshot);
    // The HINT is the unique index to add: on the GROUP BY columns, else all columns.
    let (_, hint) = error_of(c.batch_execute("SELECT upkeep.manage_matview('public.no_key')"));
    assert!(hint.unwrap().contains(r#"CREATE UNIQUE INDEX ON "public"."no_key" ("fund");"#));
    let (_, hint) = error_of(c.batch_execute("SELECT upkeep.manage_matview('public.no_group')"));
    assert!(hint.unwrap().contains(r#"CREATE UNIQUE INDEX ON "public"."no_group" ("fund", "amount");"#));
    // A caller who does not own the view.
    let mut other = cluster.connect_as("someone_else", "postgres");
    for sql in [
        "SELECT upkeep.manage_matview('public.fund_totals')",
        "SELECT * FROM upkeep.refresh_matviews('public.fund_totals')",
    ] {
        let (message, hint) = error_of(other.batch_execute(sql));
        assert!(message.contains("must be owner of table public.fund_totals"), "{sql}: {message}");
        assert!(hint.is_some());
    }
    c.batch_execute("SELECT upkeep.manage_matview('public.fund_totals')").unwrap();
    let registered = snapshot(&mut c);
    let (message, _) = error_of(other.batch_execute("SELECT upkeep.unmanage_matview('public.fund_totals')"));
    assert!(message.contains("must be owner"), "{message}");
    let job = count(&mut c, "SELECT job_id FROM upkeep.matview_policies");
    // (Until pg_upkeep grants its objects to non-superusers, these fail
    // even earlier, on reading the policies.)
    for sql in [format!("SELECT upkeep.alter_job({job}, '1 minute')"), format!("SELECT * FROM upkeep.run_job({job})")] {
        let (message, _) = error_of(other.batch_execute(&sql));
        assert!(message.contains("must be owner") || message.contains("permission denied"), "{sql}: {message}");
    }
    assert_eq!(snapshot(&mut c), registered);
    assert_ne!(registered, before);
    println!("{} bad-input cases checked", cases.len() + 7);
}

/// A view that takes about `seconds` to compute, managed to refresh whenever due.
fn slow_view(c: &mut Client, seconds: f64) {
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW public.slow_mv AS
           SELECT g AS id, g * 2 AS v FROM pg_sleep({seconds}), generate_series(1, 50000) g;
         CREATE UNIQUE INDEX ON public.slow_mv (id);"
    ))
    .unwrap();
}

#[test]
fn readers_are_never_blocked_by_a_concurrent_refresh_in_a_worker() {
    let cluster = Cluster::start("matviews-readers", &["upkeep.naptime = 1"]);
    let mut c = cluster.connect("postgres");
    slow_view(&mut c, 4.0);
    let stop = Arc::new(AtomicBool::new(false));
    // The reader: selects from the view in a loop, timing each query.
    let reader = {
        let mut r = cluster.connect("postgres");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let n: i64 = r.query_one("SELECT count(*) FROM public.slow_mv", &[]).unwrap().get(0);
                assert_eq!(n, 50_000);
                worst = worst.max(t.elapsed());
                reads += 1;
            }
            (worst, reads)
        })
    };
    c.batch_execute("SELECT upkeep.manage_matview('public.slow_mv', only_when_changed => false)").unwrap();
    // The worker's refresh begins...
    let refreshing = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker' \
                        AND query LIKE '%refresh_matview%slow_mv%'";
    assert!(
        wait_for(Duration::from_secs(30), || count(&mut c, refreshing) == 1),
        "no worker refreshed; log:\n{}",
        cluster.log()
    );
    // ...and while it runs, nobody waits for a lock on the view.
    let mut samples = 0;
    let mut waits = 0;
    while count(&mut c, refreshing) == 1 {
        waits +=
            count(&mut c, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'public.slow_mv'::regclass");
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let (worst, reads) = reader.join().unwrap();
    println!("{samples} lock samples during the refresh, {waits} waits; {reads} reads, worst {worst:?}");
    assert!(samples > 20, "the refresh was too short to observe: {samples} samples");
    assert_eq!(waits, 0);
    assert!(worst < Duration::from_secs(1), "a read took {worst:?}");
    let (status, sql): (String, String) = {
        let r = c
            .query_one(
                "SELECT status, sql FROM upkeep.job_runs WHERE action = 'refresh_matview' AND status <> 'running' ORDER BY run_id DESC LIMIT 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "ok");
    assert!(sql.contains(r#"REFRESH MATERIALIZED VIEW CONCURRENTLY "public"."slow_mv""#), "{sql}");
}

#[test]
fn a_refresh_still_running_is_not_started_twice() {
    let cluster = Cluster::start("matviews-once", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    slow_view(&mut c, 3.0);
    c.batch_execute("SELECT upkeep.manage_matview('public.slow_mv', only_when_changed => false)").unwrap();
    let first = {
        let mut s = cluster.connect("postgres");
        std::thread::spawn(move || {
            let r = s.query_one("SELECT status FROM upkeep.refresh_matviews('public.slow_mv')", &[]).unwrap();
            r.get::<_, String>(0)
        })
    };
    assert!(wait_for(Duration::from_secs(10), || {
        count(
        &mut c,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%refresh_matviews(''public.slow_mv'')%' AND pid <> pg_backend_pid()"
    ) == 1
    }));
    // The first refresh runs: it holds the view's lock for the REFRESH.
    let refreshing = "SELECT count(*) FROM pg_locks WHERE relation = 'public.slow_mv'::regclass AND granted \
                      AND mode IN ('ExclusiveLock', 'AccessExclusiveLock') AND pid <> pg_backend_pid()";
    assert!(wait_for(Duration::from_secs(30), || count(&mut c, refreshing) == 1), "the first refresh never started");
    let t = Instant::now();
    let r = c
        .query_one("SELECT status, reason FROM upkeep.refresh_matviews('public.slow_mv', force => true)", &[])
        .unwrap();
    let (status, reason): (String, String) = (r.get(0), r.get(1));
    assert!(t.elapsed() < Duration::from_secs(1), "waited {:?} for the other refresh", t.elapsed());
    assert_eq!(status, "skipped");
    assert!(reason.contains("another session is refreshing it"), "{reason}");
    assert_eq!(first.join().unwrap(), "refreshed");
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.job_runs WHERE action = 'refresh_matview'"), 1);
}

/// Refresh records of the chain's views, in order: (view, detail).
fn refreshes(c: &mut Client) -> Vec<(String, String)> {
    c.query("SELECT target, detail FROM upkeep.job_runs WHERE action = 'refresh_matview' AND status <> 'running' ORDER BY run_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn workers_refresh_a_chain_in_order_once_each_after_committed_changes_only() {
    let cluster = Cluster::start("matviews-chain", &["upkeep.naptime = 1"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(CHAIN).unwrap();
    // Registered from the end of the chain (in one transaction, so the
    // workers see all three at once); every second, so each cycle checks.
    c.batch_execute(
        "BEGIN; SELECT upkeep.manage_matview('public.fund_best', every => '1 second');
         SELECT upkeep.manage_matview('public.fund_top', every => '1 second');
         SELECT upkeep.manage_matview('public.fund_totals', every => '1 second'); COMMIT;",
    )
    .unwrap();
    let order = ["public.fund_totals", "public.fund_top", "public.fund_best"];
    assert!(
        wait_for(Duration::from_secs(30), || refreshes(&mut c).len() == 3),
        "{:?}\n{}",
        refreshes(&mut c),
        cluster.log()
    );
    assert_eq!(refreshes(&mut c).iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), order);
    // Cycles with no change: the workers keep checking, and refresh nothing again.
    for _ in 0..2 {
        assert!(ran_again(&mut c, "matview", 3), "the workers stopped checking the views");
    }
    assert_eq!(refreshes(&mut c).len(), 3, "{:?}", refreshes(&mut c));
    // Another session commits changes; each kind makes the chain refresh, in order, once.
    let mut app = cluster.connect("postgres");
    let changes = [
        ("INSERT INTO public.trades VALUES (1, 1000000, '2026-03-01')", "public.trades"),
        ("UPDATE public.funds SET name = 'renamed' WHERE id = 1", "public.funds"),
        ("INSERT INTO public.trades_2026 VALUES (2, 2000000, '2026-04-01')", "public.trades_2026"),
        ("DELETE FROM public.trades WHERE amount = 2000000", "public.trades"),
        ("TRUNCATE public.funds CASCADE", "public.funds"),
    ];
    for (i, (change, table)) in changes.iter().enumerate() {
        app.batch_execute(change).unwrap();
        let want = 3 * (i + 2);
        assert!(
            wait_for(Duration::from_secs(30), || refreshes(&mut c).len() >= want),
            "after {change}: {:?}",
            refreshes(&mut c)
        );
        for _ in 0..2 {
            assert!(ran_again(&mut c, "matview", 3), "after {change}: the workers stopped checking the views");
        }
        let runs = refreshes(&mut c);
        assert_eq!(runs.len(), want, "after {change}, once each: {runs:?}");
        let last: Vec<&str> = runs[want - 3..].iter().map(|r| r.0.as_str()).collect();
        assert_eq!(last, order, "after {change}");
        assert!(runs[want - 3].1.contains(table), "after {change}: {:?}", runs[want - 3]);
        assert!(runs[want - 2].1.contains("public.fund_totals"), "after {change}: {:?}", runs[want - 2]);
        // The views show the change.
        let (mv, live): (i64, i64) = (
            count(&mut c, "SELECT count(*) FROM public.fund_totals"),
            count(&mut c, "SELECT count(DISTINCT name) FROM public.named_trades"),
        );
        assert_eq!(mv, live, "after {change}");
    }
    let status: Vec<String> = c
        .query("SELECT status FROM upkeep.matview_status ORDER BY job_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(status, ["ok", "ok", "ok"]);
}
