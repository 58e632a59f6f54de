//! The metrics end to end: Debian's prometheus-postgres-exporter, started
//! on loopback against a test cluster with the repository's query file,
//! serves the upkeep metrics with the values upkeep.prometheus() gives.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use upkeep_cluster_tests::{samples as parse, wait_for, Cluster};

const EXPORTER: &str = "/usr/bin/prometheus-postgres-exporter";

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.0 200").then_some(body)
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn postgres_exporter_serves_the_upkeep_metrics() {
    let cluster = Cluster::start("metrics-exporter", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE nav (d date NOT NULL) PARTITION BY RANGE (d);
         CREATE TABLE nav_default PARTITION OF nav DEFAULT;
         SELECT count(*) FROM upkeep.manage_partitions('nav', 'd', premake => 2);
         INSERT INTO nav VALUES ('1999-01-01'), ('1999-02-01'), ('1999-03-01');
         CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
         INSERT INTO events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;
         SELECT upkeep.manage_archive('events', 'at', '30 days');
         SELECT count(*) FROM upkeep.archive('events');
         CREATE MATERIALIZED VIEW event_count AS SELECT count(*) AS n FROM events;
         CREATE UNIQUE INDEX ON event_count (n);
         SELECT upkeep.manage_matview('event_count');
         SELECT count(*) FROM upkeep.refresh_matviews();
         CREATE INDEX events_at_a ON events (at);
         CREATE INDEX events_at_b ON events (at);",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let queries = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/postgres_exporter.yaml");
    let log = std::fs::File::create(cluster.dir.join("exporter.log")).unwrap();
    let _exporter = Exporter(
        Command::new(EXPORTER)
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "host={} port={} user=postgres dbname=postgres sslmode=disable",
                    cluster.dir.display(),
                    cluster.port
                ),
            )
            .args([
                &format!("--web.listen-address=127.0.0.1:{port}"),
                &format!("--extend.query-path={}", queries.display()),
                "--disable-default-metrics",
                "--disable-settings-metrics",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-postgres-exporter runs (scripts/setup.sh installs it)"),
    );
    let mut served = String::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            served = scrape(port).unwrap_or_default();
            served.contains("upkeep_partitions_future")
        }),
        "no upkeep metrics from the exporter:\n{served}\n{}",
        std::fs::read_to_string(cluster.dir.join("exporter.log")).unwrap_or_default()
    );
    let exported = parse(&served);
    let ours: String = c.query_one("SELECT upkeep.prometheus()", &[]).unwrap().get(0);
    let ours = parse(&ours);
    // Values we know.
    let find = |name: &str, label: (&str, &str)| {
        exported.iter().find(|(n, l, _)| n == name && l.get(label.0).map(String::as_str) == Some(label.1)).map(|s| s.2)
    };
    assert_eq!(find("upkeep_partitions_future", ("parent", "public.nav")), Some(2.0), "{served}");
    assert_eq!(find("upkeep_partition_default_rows", ("parent", "public.nav")), Some(3.0));
    assert_eq!(find("upkeep_archive_rows_total", ("source", "public.events")), Some(70.0));
    assert_eq!(find("upkeep_index_problems", ("problem", "duplicate")), Some(1.0));
    assert_eq!(find("upkeep_job_consecutive_failures", ("target", "public.events")), Some(0.0));
    assert!(find("upkeep_matview_seconds_since_refresh", ("matview", "public.event_count")).is_some());
    // Every sample upkeep.prometheus() gives is served with the same name,
    // labels and value (the exporter may add labels of its own); the clock
    // moves between the two reads for the ages (since a refresh, stale,
    // behind the cut-off).
    for (name, labels, value) in &ours {
        let same = exported.iter().find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(k) == Some(v)));
        let Some((_, _, served_value)) = same else { panic!("{name} {labels:?} is not served:\n{served}") };
        let ages = ["seconds_since_refresh", "stale_seconds", "behind_seconds"];
        let tolerance = if ages.iter().any(|a| name.ends_with(a)) { 30.0 } else { 1e-6 };
        assert!((served_value - value).abs() <= tolerance, "{name} {labels:?}: {served_value} served, {value} ours");
    }
    println!("{} upkeep samples served by postgres_exporter match upkeep.prometheus()", ours.len());
}
