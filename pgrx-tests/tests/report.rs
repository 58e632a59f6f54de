//! upkeep.report_html() rendered in headless Chromium (Debian's chromium):
//! the page loads with no error, shows the expected sections and tables,
//! draws its charts, and makes a screenshot.

use std::process::Command;
use upkeep_cluster_tests::Cluster;

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(args: &[&str]) -> (String, String) {
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .output()
        .expect("chromium runs (scripts/setup.sh installs it)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_html_report_renders_in_a_browser_with_everything_on_it() {
    let cluster = Cluster::start("report-html", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE nav_history (fund_id int NOT NULL, nav_date date NOT NULL) PARTITION BY RANGE (nav_date);
         CREATE TABLE nav_history_default PARTITION OF nav_history DEFAULT;
         SELECT count(*) FROM upkeep.manage_partitions('nav_history', 'nav_date', premake => 3,
                start_at => date_trunc('month', now()) - interval '6 months');
         CREATE TABLE trade_events (id int PRIMARY KEY, at timestamptz);
         INSERT INTO trade_events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 200) g;
         SELECT upkeep.manage_archive('trade_events', 'at', '90 days');
         SELECT count(*) FROM upkeep.archive('trade_events');
         CREATE MATERIALIZED VIEW fund_analytics_mv AS SELECT count(*) AS n FROM trade_events;
         CREATE UNIQUE INDEX ON fund_analytics_mv (n);
         SELECT upkeep.manage_matview('fund_analytics_mv');
         SELECT count(*) FROM upkeep.refresh_matviews();
         CREATE INDEX trade_events_at_a ON trade_events (at);
         CREATE INDEX trade_events_at_b ON trade_events (at);
         -- What made the page wider than a window: a long calendar, a long fix.
         CREATE TABLE readings_with_a_rather_long_name_for_a_table (at date NOT NULL, trade int REFERENCES trade_events)
                PARTITION BY RANGE (at);
         SELECT count(*) FROM upkeep.manage_partitions('readings_with_a_rather_long_name_for_a_table', 'at', premake => 3,
                start_at => date_trunc('month', now()) - interval '38 months');",
    )
    .unwrap();
    let html: String = c.query_one("SELECT upkeep.report_html()", &[]).unwrap().get(0);
    let file = cluster.dir.join("report.html");
    std::fs::write(&file, &html).unwrap();
    let url = format!("file://{}", file.display());

    // The DOM the browser built, and what it logged while loading.
    let (dom, log) = chromium(&["--dump-dom", &url]);
    for expected in [
        "<h1>pg_upkeep report: database postgres</h1>",
        "<h2>Summary</h2>",
        "<h2>Jobs</h2>",
        "<h2>Partition calendar</h2>",
        "<h2>Partitioned tables</h2>",
        "<h2>Archive</h2>",
        "<h2>Materialized views</h2>",
        "<h2>Index health</h2>",
        "<h2>Index problems by kind</h2>",
        "public.nav_history",
        "public.trade_events",
        "public.fund_analytics_mv",
        "trade_events_at_b",
        "DROP INDEX CONCURRENTLY",
    ] {
        assert!(dom.contains(expected), "the rendered page lacks {expected:?}");
    }
    assert_eq!(
        dom.matches("<table>").count(),
        6,
        "six tables: summary, jobs, partitions, archive, views, index health"
    );
    assert!(dom.matches("<svg").count() >= 2, "the calendar and a chart");
    // Ten months of nav_history (six back, the current one, three ahead) and DEFAULT in the calendar.
    assert!(dom.matches("<rect").count() >= 11);
    let errors: Vec<&str> =
        log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("ERR_FILE")).collect();
    assert!(errors.is_empty(), "the browser reported: {errors:?}");

    // The page fits a 1280-pixel window: nothing runs off its right edge.
    // (A wrapper page measures it; the report itself has no script.)
    let wrapper = cluster.dir.join("measure.html");
    std::fs::write(
        &wrapper,
        "<!DOCTYPE html><html><body><iframe id=\"r\" src=\"report.html\" style=\"width:1280px;height:900px;border:0\"></iframe>\
         <script>document.getElementById('r').onload = function () { var d = this.contentDocument.documentElement; \
         document.body.setAttribute('data-width', String(d.scrollWidth)); };</script></body></html>",
    )
    .unwrap();
    let (measured, _) =
        chromium(&["--allow-file-access-from-files", "--dump-dom", &format!("file://{}", wrapper.display())]);
    let width: u32 = measured
        .split("data-width=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("the wrapper did not measure the page: {measured}"));
    assert!(width <= 1280, "the page is {width} pixels wide in a 1280-pixel window");

    // A screenshot, for people; it must be a real picture.
    let shot = cluster.dir.join("report.png");
    chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1400,1800", &url]);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a {} byte screenshot is too small to show the report", png.len());
    // Kept for a look: target/report.png.
    let keep = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/report.png");
    let _ = std::fs::copy(&shot, keep);
    println!(
        "rendered: {} tables, {} svg, screenshot {} bytes",
        dom.matches("<table>").count(),
        dom.matches("<svg").count(),
        png.len()
    );
}
