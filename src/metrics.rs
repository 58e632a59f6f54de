//! Metrics for dashboards: the view `upkeep.metrics` (metric, labels,
//! value; defined in finalize.sql over the other views) and
//! `upkeep.prometheus()`, the same in Prometheus' text exposition format.

use pgrx::prelude::*;

/// What each metric means and its Prometheus type.
const METRICS: &[(&str, &str, &str)] = &[
    ("upkeep_job_last_success_timestamp_seconds", "gauge", "When a run of the job last succeeded (Unix time)."),
    ("upkeep_job_last_duration_seconds", "gauge", "Time the job's actions took in its last run."),
    ("upkeep_job_consecutive_failures", "gauge", "Failed runs of the job in a row; above 0 it is backing off."),
    ("upkeep_job_interval_seconds", "gauge", "Time between two runs of the job (its every; upkeep.naptime when it has none)."),
    ("upkeep_partitions_future", "gauge", "Partitions ready beyond the current period, per managed table."),
    ("upkeep_partition_default_rows", "gauge", "Rows sitting in the DEFAULT partition, per managed table."),
    ("upkeep_archive_rows_total", "counter", "Rows an archive job has moved in all."),
    ("upkeep_matview_seconds_since_refresh", "gauge", "Seconds since pg_upkeep last refreshed the materialized view."),
    (
        "upkeep_matview_stale_seconds",
        "gauge",
        "Seconds since its last refresh when what the view reads changed since (or cannot be seen); 0 when nothing changed.",
    ),
    (
        "upkeep_archive_behind_seconds",
        "gauge",
        "How far the oldest row of a row archive's table is past its cut-off, in seconds (0: on time).",
    ),
    ("upkeep_index_problems", "gauge", "Index problems found, by kind (see upkeep.index_health)."),
    ("upkeep_index_bloat_bytes", "gauge", "Estimated bloat of all btree indexes, in bytes."),
    (
        "upkeep_scheduler_wait_seconds",
        "gauge",
        "Seconds this database's scheduler has waited for its turn past its due time (0: on time; see upkeep.max_schedulers).",
    ),
];

/// A label value as the exposition format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A sample: metric name, labels (name, value), value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// The exposition text of samples: each metric's HELP and TYPE once, then
/// its samples, in the order of `METRICS`.
pub fn exposition(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, kind, help) in METRICS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (_, labels, value) in samples.iter().filter(|s| s.0 == *name) {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            out.push_str(&format!("{name}{labels} {}\n", number(*value)));
        }
    }
    out
}

/// The index samples of upkeep.metrics from one read of the index
/// catalogs: problems found by kind (every kind, zeros included), and the
/// estimated bloat of all indexes (no problem).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn index_metrics() -> TableIterator<'static, (name!(metric, String), name!(problem, Option<String>), name!(value, f64))>
{
    crate::errors::guarded("index_metrics", || {
        let facts = crate::index_health::read();
        let found = facts.findings(0);
        let mut rows: Vec<(String, Option<String>, f64)> = crate::index_health::findings::Problem::counts(&found)
            .into_iter()
            .map(|(p, n)| ("upkeep_index_problems".to_string(), Some(p.to_string()), n as f64))
            .collect();
        let bloat: i64 = crate::index_health::history::figures(facts.indexes).filter_map(|f| f.bloat_bytes).sum();
        rows.push(("upkeep_index_bloat_bytes".to_string(), None, bloat as f64));
        TableIterator::new(rows)
    })
}

/// upkeep.metrics in Prometheus' text exposition format (version 0.0.4),
/// for a scraper or postgres_exporter.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn prometheus() -> String {
    crate::errors::guarded("prometheus", || {
        let samples = Spi::connect(|client| {
            client
                .select(
                    "SELECT metric, ARRAY(SELECT key FROM jsonb_each_text(labels) ORDER BY key), \
                            ARRAY(SELECT value FROM jsonb_each_text(labels) ORDER BY key), value \
                       FROM upkeep.metrics ORDER BY metric, labels::text",
                    None,
                    &[],
                )?
                .map(|r| {
                    let keys = r.get::<Vec<String>>(2)?.unwrap_or_default();
                    let values = r.get::<Vec<String>>(3)?.unwrap_or_default();
                    Ok((
                        r.get::<String>(1)?.unwrap_or_default(),
                        keys.into_iter().zip(values).collect(),
                        r.get::<f64>(4)?.unwrap_or(f64::NAN),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .unwrap_or_else(|e| error!("pg_upkeep could not read upkeep.metrics: {e}"));
        exposition(&samples)
    })
}

#[cfg(test)]
mod exposition_tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_escaped_labels() {
        let samples = vec![
            (
                "upkeep_partitions_future".to_string(),
                vec![("parent".to_string(), "\"Nav\\History\"\n".to_string())],
                3.0,
            ),
            ("upkeep_index_bloat_bytes".to_string(), vec![], 1.5e9),
            ("upkeep_job_last_duration_seconds".to_string(), vec![("job_id".into(), "7".into())], 0.25),
        ];
        let text = exposition(&samples);
        assert!(text.contains("# HELP upkeep_partitions_future Partitions ready"));
        assert!(text.contains("# TYPE upkeep_archive_rows_total counter\n"));
        assert!(text.contains("upkeep_partitions_future{parent=\"\\\"Nav\\\\History\\\"\\n\"} 3\n"), "{text}");
        assert!(text.contains("upkeep_index_bloat_bytes 1500000000\n"));
        assert!(text.contains("upkeep_job_last_duration_seconds{job_id=\"7\"} 0.25\n"));
        // Every metric is announced, samples or not; every line is a comment or a sample.
        assert_eq!(text.matches("# TYPE ").count(), METRICS.len());
        assert!(text.lines().all(|l| l.starts_with("# ") || l.starts_with("upkeep_")));
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The value of the sample with exactly these labels (a JSON object).
    fn value(metric: &str, labels: &str) -> Option<f64> {
        let found = Spi::get_one_with_args::<f64>(
            "SELECT value FROM upkeep.metrics WHERE metric = $1 AND labels = $2::jsonb",
            &[metric.into(), labels.into()],
        );
        found.unwrap_or_else(|_| {
            let all = Spi::get_one_with_args::<String>(
                "SELECT string_agg(labels::text, ' ') FROM upkeep.metrics WHERE metric = $1",
                &[metric.into()],
            );
            panic!("no {metric} sample labelled {labels}; there are: {all:?}")
        })
    }

    #[pg_test]
    fn metrics_follow_what_maintenance_did() {
        Spi::run(
            "CREATE TABLE public.m_nav (d date NOT NULL) PARTITION BY RANGE (d);
             CREATE TABLE public.m_nav_default PARTITION OF public.m_nav DEFAULT;
             SELECT count(*) FROM upkeep.manage_partitions('public.m_nav', 'd', premake => 2);
             INSERT INTO public.m_nav VALUES ('1999-01-01'), ('1999-02-01');
             CREATE TABLE public.m_events (id int PRIMARY KEY, at timestamptz);
             INSERT INTO public.m_events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;
             SELECT upkeep.manage_archive('public.m_events', 'at', '30 days');
             SELECT count(*) FROM upkeep.archive('public.m_events');
             CREATE MATERIALIZED VIEW public.m_mv AS SELECT count(*) AS n FROM public.m_events;
             CREATE UNIQUE INDEX ON public.m_mv (n);
             SELECT upkeep.manage_matview('public.m_mv');
             SELECT count(*) FROM upkeep.refresh_matviews('public.m_mv');
             CREATE INDEX m_events_at_a ON public.m_events (at);
             CREATE INDEX m_events_at_b ON public.m_events (at);",
        )
        .unwrap();
        assert_eq!(value("upkeep_partitions_future", r#"{"parent": "public.m_nav"}"#), Some(2.0));
        assert_eq!(value("upkeep_partition_default_rows", r#"{"parent": "public.m_nav"}"#), Some(2.0));
        assert_eq!(value("upkeep_archive_rows_total", r#"{"source": "public.m_events"}"#), Some(70.0));
        let since = value("upkeep_matview_seconds_since_refresh", r#"{"matview": "public.m_mv"}"#).unwrap();
        assert!((0.0..60.0).contains(&since), "{since}");
        assert_eq!(value("upkeep_index_problems", r#"{"problem": "duplicate"}"#), Some(1.0));
        assert_eq!(value("upkeep_index_problems", r#"{"problem": "invalid"}"#), Some(0.0));
        let job: i64 =
            Spi::get_one("SELECT job_id FROM upkeep.archive_policies WHERE source = 'public.m_events'::regclass")
                .unwrap()
                .unwrap();
        let job_labels = format!(r#"{{"job_id": "{job}", "kind": "archive", "target": "public.m_events"}}"#);
        assert_eq!(value("upkeep_job_consecutive_failures", &job_labels), Some(0.0));
        assert!(value("upkeep_job_last_success_timestamp_seconds", &job_labels).unwrap() > 1.7e9);
        assert!(value("upkeep_index_bloat_bytes", "{}").is_some());
        assert_eq!(value("upkeep_job_interval_seconds", &job_labels), Some(3600.0));
        // Stale only once what the view reads changed since its refresh.
        let mv = r#"{"matview": "public.m_mv"}"#;
        Spi::run("UPDATE upkeep.matview_state SET refreshed_at = now() - interval '1 hour'").unwrap();
        assert_eq!(value("upkeep_matview_stale_seconds", mv), Some(0.0));
        Spi::run("INSERT INTO public.m_events VALUES (1000, now())").unwrap();
        assert_eq!(value("upkeep_matview_stale_seconds", mv), Some(3600.0));
        // The archive ran: its oldest row is at the cut-off; one 40 days old is 10 days behind.
        let source = r#"{"source": "public.m_events"}"#;
        assert_eq!(value("upkeep_archive_behind_seconds", source), Some(0.0));
        Spi::run("INSERT INTO public.m_events VALUES (1001, now() - interval '40 days')").unwrap();
        assert_eq!(value("upkeep_archive_behind_seconds", source), Some(864000.0));
        let text = Spi::get_one::<String>("SELECT upkeep.prometheus()").unwrap().unwrap();
        assert!(text.contains("upkeep_partitions_future{parent=\"public.m_nav\"} 2\n"), "{text}");
        assert!(text.contains("upkeep_archive_rows_total{source=\"public.m_events\"} 70\n"), "{text}");
        assert!(text.contains("upkeep_index_problems{problem=\"duplicate\"} "), "{text}");
    }
}
