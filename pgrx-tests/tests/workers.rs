//! The background workers on real clusters with pg_upkeep preloaded.

use std::time::Duration;
use upkeep_cluster_tests::Cluster;

const PARENT: &str = "CREATE TABLE public.nav_history (fund_id int NOT NULL, nav_date date NOT NULL, \
                      PRIMARY KEY (fund_id, nav_date)) PARTITION BY RANGE (nav_date)";

/// A policy written with a plain INSERT, as pg_restore would: the workers
/// pick it up, create the partitions and record the runs.
fn register_by_insert(c: &mut postgres::Client, premake: i32) {
    c.batch_execute(PARENT).unwrap();
    c.execute(
        "INSERT INTO upkeep.partition_policies (parent, control, premake) VALUES ('public.nav_history', 'nav_date', $1)",
        &[&premake],
    )
    .unwrap();
}

fn partitions(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass", &[])
        .unwrap()
        .get(0)
}

/// Whether a scheduler was started for `db` and every scheduler started
/// so far has ended (at debug1 the log names the database a scheduler is
/// started for, and only the kind of one that ended).
fn first_visit_over(cluster: &Cluster, db: &str) -> bool {
    let log = cluster.log();
    let started = log.matches("starting background worker process \"pg_upkeep scheduler for ").count();
    let ended = log.matches("background worker \"pg_upkeep scheduler\" (PID").count();
    log.contains(&format!("starting background worker process \"pg_upkeep scheduler for {db}\"")) && ended >= started
}

const ALL_MADE: &str = "SELECT count(*) = 25 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass";

#[test]
fn workers_create_what_a_plain_insert_registered_and_record_it() {
    let cluster = Cluster::start("workers-basic", &["upkeep.naptime = 1"]);
    let mut c = cluster.connect("postgres");
    register_by_insert(&mut c, 24);
    assert!(cluster.wait_until("postgres", ALL_MADE, Duration::from_secs(30)), "workers made {}", partitions(&mut c));
    let runs: i64 = c
        .query_one("SELECT count(*) FROM upkeep.job_runs WHERE action = 'create_partition' AND status = 'ok'", &[])
        .unwrap()
        .get(0);
    assert_eq!(runs, 25);
    // The launcher shows itself under the name the README gives it.
    let launchers: i64 = c
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_upkeep launcher'", &[])
        .unwrap()
        .get(0);
    assert_eq!(launchers, 1);
    // Later cycles find nothing due and do nothing.
    std::thread::sleep(Duration::from_secs(3));
    let again: i64 = c
        .query_one(
            "SELECT count(*) FROM upkeep.job_runs WHERE action = 'create_partition' AND status <> 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, 25);
}

/// Nothing due: the launcher does not start a scheduler every naptime to
/// find that out (in a database with the extension or without), yet a
/// policy changed by a plain UPDATE is acted on at once.
#[test]
fn an_idle_database_is_left_alone_and_a_changed_policy_is_acted_on_at_once() {
    let cluster = Cluster::start("workers-idle", &["upkeep.naptime = 1", "log_min_messages = debug1"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute("CREATE DATABASE plain").unwrap();
    register_by_insert(&mut c, 24);
    assert!(cluster.wait_until("postgres", ALL_MADE, Duration::from_secs(60)), "workers made {}", partitions(&mut c));
    let plain_seen = "starting background worker process \"pg_upkeep scheduler for plain\"";
    assert!(upkeep_cluster_tests::wait_for(Duration::from_secs(60), || cluster.log().contains(plain_seen)));
    let starts = |db: &str| {
        cluster.log().matches(&format!("starting background worker process \"pg_upkeep scheduler for {db}\"")).count()
    };
    let (postgres, plain) = (starts("postgres"), starts("plain"));
    // Six naptimes with nothing due. One start is allowed: a policy
    // change that came while the last scheduler ran is checked once more.
    std::thread::sleep(Duration::from_secs(6));
    let (postgres, plain) = (starts("postgres") - postgres, starts("plain") - plain);
    assert!(
        postgres <= 1 && plain <= 1,
        "schedulers started in six idle naptimes: {postgres} in postgres, {plain} in plain"
    );
    // The next visit with nothing due is an hour away: only the nudge of
    // the committed UPDATE can make the workers act now.
    c.batch_execute("UPDATE upkeep.partition_policies SET premake = 30").unwrap();
    let more = "SELECT count(*) = 31 FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass";
    assert!(cluster.wait_until("postgres", more, Duration::from_secs(60)), "made {}", partitions(&mut c));
}

#[test]
fn a_database_that_gains_the_extension_is_served_and_one_that_drops_it_or_is_dropped_is_not() {
    let cluster = Cluster::start("workers-dbs", &["upkeep.naptime = 1"]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE second").unwrap();
    let mut second = cluster.connect("second");
    second.batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
    register_by_insert(&mut second, 24);
    assert!(cluster.wait_until("second", ALL_MADE, Duration::from_secs(30)), "made {}", partitions(&mut second));

    // Without the extension nothing is done there any more.
    second.batch_execute("DROP EXTENSION pg_upkeep; DROP TABLE public.nav_history; ").unwrap();
    second.batch_execute(PARENT).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(partitions(&mut second), 0);

    // The workers never hold on to a database: it can be dropped.
    drop(second);
    admin.batch_execute("DROP DATABASE second").unwrap();
}

#[test]
fn a_reload_with_a_new_naptime_takes_effect() {
    let cluster = Cluster::start("workers-sighup", &["upkeep.naptime = 3600", "log_min_messages = debug1"]);
    let mut c = cluster.connect("postgres");
    // The launcher's first visit of the database is over, so that it
    // sleeps for an hour: a policy registered before would be acted on.
    assert!(
        upkeep_cluster_tests::wait_for(Duration::from_secs(60), || first_visit_over(&cluster, "postgres")),
        "the launcher never visited postgres:\n{}",
        cluster.log()
    );
    register_by_insert(&mut c, 24);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(partitions(&mut c), 0, "nothing happens within the hour-long naptime");
    c.batch_execute("ALTER SYSTEM SET upkeep.naptime = 1").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    assert!(cluster.wait_until("postgres", ALL_MADE, Duration::from_secs(30)), "made {}", partitions(&mut c));
}

#[test]
fn a_hot_standby_stays_idle_until_it_is_promoted() {
    // The primary's workers are off, so the policy is still due when the
    // standby takes over.
    let primary = Cluster::start("workers-primary", &["upkeep.enabled = off"]);
    let mut p = primary.connect("postgres");
    register_by_insert(&mut p, 24);
    let standby = Cluster::standby_of(&primary, "workers-standby", &["upkeep.enabled = on", "upkeep.naptime = 1"]);
    let mut s = standby.connect("postgres");
    assert!(s.query_one("SELECT pg_is_in_recovery()", &[]).unwrap().get::<_, bool>(0));
    std::thread::sleep(Duration::from_secs(3));
    let workers: i64 =
        s.query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_upkeep%'", &[]).unwrap().get(0);
    assert_eq!(workers, 0, "no pg_upkeep worker runs on a hot standby");
    assert!(!standby.log().contains("ERROR"), "the standby logged errors:\n{}", standby.log());
    // Called by hand on the standby, maintenance says what is going on.
    let (message, hint) = upkeep_cluster_tests::error_of(s.batch_execute("SELECT * FROM upkeep.run_maintenance()"));
    assert_eq!(message, "pg_upkeep cannot maintain tables on a hot standby");
    assert!(hint.is_some_and(|h| h.contains("primary")));

    // Promote the standby (and stop the old primary): the workers start.
    drop(p);
    drop(primary);
    s.batch_execute("SELECT pg_promote()").unwrap();
    assert!(standby.wait_until("postgres", ALL_MADE, Duration::from_secs(30)), "made {}", partitions(&mut s));
}

#[test]
fn pg_cron_and_the_workers_together_neither_double_create_nor_deadlock() {
    let cluster = Cluster::start(
        "workers-cron",
        &[
            "shared_preload_libraries = 'pg_upkeep,pg_cron'",
            "cron.database_name = 'postgres'",
            "cron.use_background_workers = on",
            "max_worker_processes = 32",
            "upkeep.naptime = 1",
        ],
    );
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE EXTENSION pg_cron; \
         CREATE TABLE public.events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at); \
         INSERT INTO upkeep.partition_policies (parent, control, granularity, premake) VALUES ('public.events', 'at', 'day', 1); \
         SELECT cron.schedule('upkeep', '* * * * *', 'SELECT upkeep.run_maintenance()');",
    )
    .unwrap();
    // pg_cron 1.4 fires at second 0 of each minute: make a lot of work due
    // just before, so that pg_cron's run and the workers' cycles overlap.
    let wait: f64 = c.query_one("SELECT 59.3 - extract(second FROM clock_timestamp())::float8", &[]).unwrap().get(0);
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    for premake in [150, 300, 450] {
        c.execute("UPDATE upkeep.partition_policies SET premake = $1", &[&premake]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let cron_ran = "SELECT count(*) > 0 FROM cron.job_run_details WHERE end_time IS NOT NULL";
    assert!(cluster.wait_until("postgres", cron_ran, Duration::from_secs(90)), "pg_cron never ran the job");
    // Today and 450 days ahead.
    let all = "SELECT count(*) = 451 FROM pg_inherits WHERE inhparent = 'public.events'::regclass";
    if !cluster.wait_until("postgres", all, Duration::from_secs(60)) {
        let n: i64 = c
            .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.events'::regclass", &[])
            .unwrap()
            .get(0);
        panic!("{n} partitions instead of 451");
    }

    let failed_cron: i64 = c
        .query_one(
            "SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded' AND end_time IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(failed_cron, 0, "a pg_cron run failed");
    let (created, failed): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status NOT IN ('ok', 'running')) \
                   FROM upkeep.job_runs WHERE action = 'create_partition'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(failed, 0, "an action failed");
    assert_eq!(created, 451, "every partition was created exactly once");
    assert!(!cluster.log().contains("deadlock detected"));
}

/// Partitions that exist as tables but are not attached: what a half-done
/// creation would leave.
const STRAYS: &str =
    "SELECT count(*) FROM pg_class WHERE relname LIKE 'events\\_p2%' AND relkind = 'r' AND NOT relispartition";

/// Starts a long creation (2,001 daily partitions) and returns the pid of the
/// scheduler while it is at work.
fn busy_scheduler(cluster: &Cluster, c: &mut postgres::Client) -> i32 {
    c.batch_execute(
        "CREATE TABLE public.events (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at); \
         INSERT INTO upkeep.partition_policies (parent, control, granularity, premake) VALUES ('public.events', 'at', 'day', 2000);",
    )
    .unwrap();
    let busy = "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'public.events'::regclass)";
    assert!(cluster.wait_until("postgres", busy, Duration::from_secs(30)), "the workers never started");
    let row = c
        .query_one("SELECT pid, query FROM pg_stat_activity WHERE backend_type = 'pg_upkeep scheduler'", &[])
        .expect("a scheduler is at work");
    // pg_stat_activity says which job and action the worker is doing.
    let doing: String = row.get(1);
    assert!(doing.starts_with("pg_upkeep job ") && doing.contains("create_partition public.events_p"), "{doing}");
    row.get(0)
}

fn assert_finished_cleanly(cluster: &Cluster) {
    let all = "SELECT count(*) = 2001 FROM pg_inherits WHERE inhparent = 'public.events'::regclass";
    assert!(cluster.wait_until("postgres", all, Duration::from_secs(120)), "the job did not complete");
    let mut c = cluster.connect("postgres");
    let strays: i64 = c.query_one(STRAYS, &[]).unwrap().get(0);
    assert_eq!(strays, 0, "half-made partitions were left behind");
    let recorded: i64 = c
        .query_one("SELECT count(*) FROM upkeep.job_runs WHERE action = 'create_partition' AND status = 'ok'", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, 2001, "one run record per partition made");
    let health: String = c.query_one("SELECT status FROM upkeep.partition_health", &[]).unwrap().get(0);
    assert_eq!(health, "ok");
}

/// A terminated scheduler stops within a second, wherever it is, and takes
/// nothing else down: terminated five times while it creates partitions
/// (catalog writes, each a WAL record written in a critical section), the
/// server never restarts. PostgreSQL's default handler for workers ended
/// the process inside the signal handler, which in a critical section is
/// a PANIC and a restart of every session (seen under load).
#[test]
fn a_terminated_scheduler_stops_at_once_and_the_next_one_finishes_the_job() {
    let cluster = Cluster::start("workers-sigterm", &["upkeep.naptime = 1"]);
    let mut c = cluster.connect("postgres");
    let mut pid = busy_scheduler(&cluster, &mut c);
    let lost = |round: i32, e: postgres::Error| -> ! {
        panic!("round {round}: the session was lost ({e}); server log:\n{}", cluster.log())
    };
    for round in 1..=5 {
        let started = std::time::Instant::now();
        c.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap_or_else(|e| lost(round, e));
        let gone = format!("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {pid})");
        assert!(cluster.wait_until("postgres", &gone, Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?} to stop", started.elapsed());
        let next = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_upkeep scheduler') \
                      OR (SELECT count(*) = 2001 FROM pg_inherits WHERE inhparent = 'public.events'::regclass)";
        assert!(cluster.wait_until("postgres", next, Duration::from_secs(30)), "no scheduler came back");
        let scheduler = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_upkeep scheduler'";
        match c.query_opt(scheduler, &[]).unwrap_or_else(|e| lost(round, e)) {
            Some(row) => pid = row.get(0),
            None => break,
        }
    }
    assert_finished_cleanly(&cluster);
    let log = cluster.log();
    assert!(!log.contains("PANIC") && !log.contains("reinitializing"), "the server restarted:\n{log}");
}

#[test]
fn a_scheduler_killed_with_sigkill_is_restarted_and_leaves_nothing_half_made() {
    let cluster = Cluster::start("workers-kill9", &["upkeep.naptime = 1", "restart_after_crash = on"]);
    let mut c = cluster.connect("postgres");
    let pid = busy_scheduler(&cluster, &mut c);
    drop(c);
    cluster.kill_9(pid);
    assert_finished_cleanly(&cluster);
}

/// Many more databases than background-worker slots: the launcher runs at
/// most `upkeep.max_schedulers` at once, longest-waiting first, so every
/// database gets its dropped future partition back, not the same few each
/// cycle; and a database waiting for its turn can say so.
#[test]
fn every_database_is_served_when_there_are_more_databases_than_worker_slots() {
    const DATABASES: usize = 24;
    // 8 processes: the launcher, the logical replication launcher, and 6
    // for everything else, against 25 databases.
    let cluster = Cluster::start(
        "workers-many-databases",
        &["upkeep.naptime = 1", "max_worker_processes = 8", "upkeep.max_schedulers = 2", "upkeep.enabled = off"],
    );
    let mut admin = cluster.connect("postgres");
    let names: Vec<String> = (0..DATABASES).map(|i| format!("served_{i:02}")).collect();
    for name in &names {
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut c = cluster.connect(name);
        c.batch_execute(&format!(
            "CREATE EXTENSION pg_upkeep; {PARENT};
             SELECT count(*) FROM upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 2);"
        ))
        .unwrap();
        // The furthest future partition goes: the workers must make it again.
        c.batch_execute(
            "DO $$ DECLARE p regclass; BEGIN
               SELECT i.inhrelid::regclass INTO p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'public.nav_history'::regclass ORDER BY c.relname DESC LIMIT 1;
               EXECUTE format('DROP TABLE %s', p);
             END $$;",
        )
        .unwrap();
        assert_eq!(partitions(&mut c), 2);
    }
    admin.batch_execute("ALTER SYSTEM SET upkeep.enabled = on").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let started = std::time::Instant::now();
    let served = |name: &String| {
        cluster
            .try_connect(name)
            .and_then(|mut c| {
                c.query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass", &[])
                    .ok()
            })
            .is_some_and(|r| r.get::<_, i64>(0) == 3)
    };
    let all = upkeep_cluster_tests::wait_for(Duration::from_secs(180), || names.iter().all(served));
    let missing: Vec<&String> = names.iter().filter(|n| !served(n)).collect();
    assert!(all, "{} of {DATABASES} databases never served: {missing:?}", missing.len());
    println!("{DATABASES} databases served in {:.1} s with 2 schedulers at a time", started.elapsed().as_secs_f64());
    // Never more schedulers at once than allowed, and no slot shortage.
    let log = cluster.log();
    assert!(!log.contains("no background worker slot for the scheduler"), "the launcher ran out of slots");
    // Each database reads how long its scheduler waits (0 when on time).
    let mut c = cluster.connect(&names[0]);
    let wait: f64 = c
        .query_one("SELECT value FROM upkeep.metrics WHERE metric = 'upkeep_scheduler_wait_seconds'", &[])
        .unwrap()
        .get(0);
    assert!((0.0..60.0).contains(&wait), "{wait}");
    assert!(c
        .query_one("SELECT upkeep.prometheus()", &[])
        .unwrap()
        .get::<_, String>(0)
        .contains("upkeep_scheduler_wait_seconds "));
}
