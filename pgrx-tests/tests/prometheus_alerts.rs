//! contrib/prometheus-alerts.yml, tested with promtool (Debian's
//! `prometheus` package) on series from a real scrape: a database `bad` in
//! every state the rules look for, a database `good` in none, each scraped
//! with upkeep.prometheus(). The samples become promtool's input series as
//! they would go on: a timestamp stays, an age (seconds since, stale,
//! behind, waiting) grows by the minute, anything else stays; the scrape's
//! moment is promtool's time 0.

use postgres::Client;
use std::collections::BTreeMap;
use std::fmt::Write;
use upkeep_cluster_tests::{count, samples, Cluster, Sample};

const BAD: &str = "
CREATE TABLE short (d date NOT NULL) PARTITION BY RANGE (d);
SELECT count(*) FROM upkeep.manage_partitions('short', 'd', premake => 0);
CREATE TABLE spill (d date NOT NULL) PARTITION BY RANGE (d);
CREATE TABLE spill_default PARTITION OF spill DEFAULT;
SELECT count(*) FROM upkeep.manage_partitions('spill', 'd', premake => 3);
INSERT INTO spill VALUES ('1999-01-01');
-- A view whose refresh fails: division by zero.
CREATE TABLE divisors (n int NOT NULL);
INSERT INTO divisors VALUES (1);
CREATE MATERIALIZED VIEW ratios AS SELECT 1 / n AS r FROM divisors;
SELECT upkeep.manage_matview('ratios', concurrently => false);
UPDATE divisors SET n = 0;
-- A view refreshed once, then what it reads changed.
CREATE TABLE feed (x int);
CREATE MATERIALIZED VIEW feed_count AS SELECT count(*) AS n FROM feed;
SELECT upkeep.manage_matview('feed_count', every => '5 minutes', concurrently => false);
SELECT count(*) FROM upkeep.refresh_matviews('feed_count');
INSERT INTO feed VALUES (1);
-- An archive that ran once and succeeds no more: it has no rows to move,
-- and its next successes are what the test's hours leave out.
CREATE TABLE logs (at timestamptz NOT NULL);
SELECT upkeep.manage_archive('logs', 'at', '30 days');
SELECT count(*) FROM upkeep.archive('logs');
-- An archive not run: rows ten days past a one-day cut-off.
CREATE TABLE old_rows (at timestamptz NOT NULL);
INSERT INTO old_rows SELECT now() - g * interval '1 day' FROM generate_series(1, 11) g;
SELECT upkeep.manage_archive('old_rows', 'at', '1 day');
-- A unique index that failed to build concurrently stays, invalid.
CREATE TABLE twins (x int);
INSERT INTO twins VALUES (1), (1);
";

const GOOD: &str = "
CREATE TABLE nav (d date NOT NULL) PARTITION BY RANGE (d);
CREATE TABLE nav_default PARTITION OF nav DEFAULT;
SELECT count(*) FROM upkeep.manage_partitions('nav', 'd', premake => 3);
CREATE TABLE feed (x int);
CREATE MATERIALIZED VIEW feed_count AS SELECT count(*) AS n FROM feed;
SELECT upkeep.manage_matview('feed_count', every => '5 minutes', concurrently => false);
SELECT count(*) FROM upkeep.refresh_matviews('feed_count');
CREATE TABLE logs (at timestamptz NOT NULL);
INSERT INTO logs SELECT now() - g * interval '1 day' FROM generate_series(1, 40) g;
SELECT upkeep.manage_archive('logs', 'at', '30 days');
SELECT count(*) FROM upkeep.archive('logs');
";

/// An alert's labels.
type Labels = BTreeMap<String, String>;

/// The scrape of a database, and the moment it was taken (Unix seconds).
fn scrape(c: &mut Client) -> (Vec<Sample>, f64) {
    let row = c.query_one("SELECT upkeep.prometheus(), extract(epoch FROM now())::float8", &[]).unwrap();
    (samples(row.get(0)), row.get(1))
}

/// promtool's input series for a scrape: 300 minutes of it. In a healthy
/// database the jobs go on succeeding (their last success keeps up with
/// the clock, and what is behind or stale is caught up with); in the
/// other, nothing runs any more, and every age grows.
fn series(out: &mut String, instance: &str, samples: &[Sample], at: f64, healthy: bool) {
    for (name, labels, value) in samples {
        let ages = ["seconds_since_refresh", "stale_seconds", "behind_seconds", "wait_seconds"];
        let values = if name.ends_with("_timestamp_seconds") {
            format!("{}+{}x300", value - at, if healthy { 60 } else { 0 })
        } else if !healthy && ages.iter().any(|a| name.ends_with(a)) && *value > 0.0 {
            format!("{value}+60x300")
        } else {
            format!("{value}+0x300")
        };
        let mut all: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        all.push(format!("instance=\"{instance}\""));
        writeln!(out, "      - series: '{name}{{{}}}'\n        values: '{values}'", all.join(", ")).unwrap();
    }
}

#[test]
fn the_alert_rules_fire_on_a_scrape_of_every_bad_state_and_on_nothing_else() {
    let cluster = Cluster::start(
        "prometheus-alerts",
        // The workers serve `good` only, so that its scrape has the
        // scheduler's wait and nothing acts on `bad` behind the test's back.
        &["upkeep.databases = 'good'", "upkeep.naptime = '1s'"],
    );
    let mut admin = cluster.connect("postgres");
    for db in ["bad", "good"] {
        admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        cluster.connect(db).batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
    }
    let mut bad = cluster.connect("bad");
    bad.batch_execute(BAD).unwrap();
    assert!(bad.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY twins_x ON twins (x)").is_err());
    let ratios = "SELECT job_id FROM upkeep.matview_policies WHERE matview = 'ratios'::regclass";
    for _ in 0..3 {
        bad.batch_execute(&format!("SELECT count(*) FROM upkeep.run_job(({ratios}))")).unwrap();
    }
    let failures = format!("SELECT consecutive_failures::int8 FROM upkeep.job_state WHERE job_id = ({ratios})");
    assert_eq!(count(&mut bad, &failures), 3);
    let mut good = cluster.connect("good");
    good.batch_execute(GOOD).unwrap();
    assert!(
        cluster.wait_until(
            "good",
            "SELECT EXISTS (SELECT 1 FROM upkeep.metrics WHERE metric = 'upkeep_scheduler_wait_seconds')",
            std::time::Duration::from_secs(120)
        ),
        "the workers never served database good:\n{}",
        cluster.log()
    );

    let (bad_samples, bad_at) = scrape(&mut bad);
    let (good_samples, good_at) = scrape(&mut good);
    let mut test =
        String::from("rule_files:\n  - RULES\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    series(&mut test, "bad", &bad_samples, bad_at, false);
    series(&mut test, "good", &good_samples, good_at, true);
    // A scheduler that waits: the good database's series, growing by the
    // minute as a waiting scheduler's does (a real wait of minutes would
    // take a starved cluster minutes to show).
    let waiting: Vec<Sample> =
        good_samples.iter().filter(|s| s.0 == "upkeep_scheduler_wait_seconds").cloned().collect();
    assert_eq!(waiting.len(), 1, "{good_samples:?}");
    for (name, labels, _) in &waiting {
        let mut all: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        all.push("instance=\"waiting\"".into());
        writeln!(test, "      - series: '{name}{{{}}}'\n        values: '0+60x300'", all.join(", ")).unwrap();
    }
    let job = |samples: &[Sample], target: &str| -> Labels {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == "upkeep_job_consecutive_failures" && l.iter().any(|(k, v)| k == "target" && v == target)
            })
            .map(|s| s.1.clone())
            .unwrap_or_else(|| panic!("no job for {target}"))
    };
    // Expected at 4 hours: each rule for the bad instance's series only.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus-alerts.yml"),
    )
    .unwrap();
    let l = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    let with = |mut labels: Labels, severity: &str| {
        labels.insert("instance".into(), "bad".into());
        labels.insert("severity".into(), severity.into());
        labels
    };
    let cases: Vec<(&str, Vec<Labels>)> = vec![
        ("UpkeepPartitionRunwayShort", vec![with(l(&[("parent", "public.short")]), "warning")]),
        ("UpkeepRowsInDefaultPartition", vec![with(l(&[("parent", "public.spill")]), "warning")]),
        ("UpkeepJobFailing", vec![with(job(&bad_samples, "public.ratios"), "critical")]),
        (
            "UpkeepJobNotSucceeding",
            vec![
                with(job(&bad_samples, "public.feed_count"), "warning"),
                with(job(&bad_samples, "public.logs"), "warning"),
            ],
        ),
        ("UpkeepMatviewStale", vec![with(l(&[("matview", "public.feed_count")]), "warning")]),
        ("UpkeepArchiveBehind", vec![with(l(&[("source", "public.old_rows")]), "warning")]),
        ("UpkeepInvalidIndex", vec![with(l(&[("problem", "invalid")]), "warning")]),
        ("UpkeepWaitingForWorkerSlot", vec![l(&[("instance", "waiting"), ("severity", "warning")])]),
    ];
    test.push_str("    alert_rule_test:\n");
    for (alert, alerts) in &cases {
        // Nothing yet at the start from a rule that waits for its `for`.
        let block = rules.split("- alert: ").find(|b| b.starts_with(alert)).unwrap();
        if block.contains("\n        for: ") {
            write!(test, "      - alertname: {alert}\n        eval_time: 0m\n").unwrap();
        }
        write!(test, "      - alertname: {alert}\n        eval_time: 4h\n        exp_alerts:\n").unwrap();
        for labels in alerts {
            test.push_str("          - exp_labels:\n");
            for (k, v) in labels {
                writeln!(test, "              {k}: '{v}'").unwrap();
            }
            test.push_str("            exp_annotations:\n");
            for key in ["summary", "description"] {
                let line = block.lines().find(|x| x.trim_start().starts_with(&format!("{key}:"))).unwrap();
                let mut text = line.split_once(": ").unwrap().1.trim().trim_matches('"').to_string();
                for (k, v) in labels {
                    text = text.replace(&format!("{{{{ $labels.{k} }}}}"), v);
                }
                writeln!(test, "              {key}: \"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")).unwrap();
            }
        }
    }
    let dir = cluster.dir.join("promtool");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yml"), &rules).unwrap();
    std::fs::write(dir.join("test.yml"), test.replace("RULES", "rules.yml")).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool runs (scripts/setup.sh installs Debian's prometheus)");
    assert!(
        out.status.success(),
        "promtool:\n{}{}\ntest file: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dir.join("test.yml").display()
    );
}
