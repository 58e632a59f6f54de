//! `upkeep.report_html()`: one self-contained HTML page for people who
//! would rather look than read: a summary, jobs, a partition calendar,
//! archive and refresh status, index health, with inline SVG charts. No
//! script, no stylesheet or font from the network. At the size of a big
//! database (2,000 tables, 50,000 indexes) it stays a page: what needs
//! attention comes first and each list shows its first rows, naming the
//! view that has them all. The page is built here from plain rows (pure,
//! unit-tested); the SQL function reads them.

use pgrx::prelude::*;

/// Rows a table shows; the rest are counted and left to its view.
pub const ROWS_SHOWN: usize = 100;
/// Tables the partition calendar draws.
pub const CALENDAR_SHOWN: usize = 40;

/// Text made safe for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A titled table of text cells; `status` names the column whose value
/// colours the row (ok, failed, ...): a row whose status is not `ok`
/// needs attention. `view` is where all the rows are.
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub status: Option<usize>,
    pub empty: String,
    pub view: String,
}

impl Table {
    fn needs_attention(&self, row: &[String]) -> bool {
        self.status.and_then(|i| row.get(i)).is_some_and(|s| s != "ok")
    }

    /// How many rows need attention.
    fn attention(&self) -> usize {
        self.rows.iter().filter(|r| self.needs_attention(r)).count()
    }
}

/// One partition for the calendar: its table, label, state.
pub struct Cell {
    pub parent: String,
    pub label: String,
    pub state: String,
}

/// The jobs of the tables the calendar draws, from the table of managed
/// tables (job id first, name second): those that need attention first,
/// then the others, CALENDAR_SHOWN in all, in the order of their names.
fn calendar_jobs(managed: &Table) -> Vec<i64> {
    let (first, rest): (Vec<&Vec<String>>, Vec<&Vec<String>>) =
        managed.rows.iter().partition(|r| managed.needs_attention(r));
    let mut drawn: Vec<(&String, i64)> =
        first.into_iter().chain(rest).take(CALENDAR_SHOWN).filter_map(|r| Some((&r[1], r[0].parse().ok()?))).collect();
    drawn.sort();
    drawn.into_iter().map(|d| d.1).collect()
}

/// The first lines of the page: per table, how many rows and how many need
/// attention, with the biggest lists' views named.
fn summary_html(tables: &[Table]) -> String {
    let mut h = String::from(
        "<section><h2>Summary</h2><table><thead><tr><th>what</th><th>rows</th><th>need attention</th>\
         <th>all of them</th></tr></thead><tbody>",
    );
    for t in tables {
        let attention = t.attention();
        let class = if attention > 0 { "behind" } else { "ok" };
        h.push_str(&format!(
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{attention}</td><td>SELECT * FROM {};</td></tr>",
            esc(&t.title),
            t.rows.len(),
            esc(&t.view)
        ));
    }
    h.push_str("</tbody></table></section>");
    h
}

fn table_html(t: &Table) -> String {
    let mut h = format!("<section><h2>{}</h2>", esc(&t.title));
    if t.rows.is_empty() {
        h.push_str(&format!("<p class=\"empty\">{}</p></section>", esc(&t.empty)));
        return h;
    }
    // What needs attention first, each part in the view's order.
    let (first, rest): (Vec<&Vec<String>>, Vec<&Vec<String>>) = t.rows.iter().partition(|r| t.needs_attention(r));
    let shown: Vec<&Vec<String>> = first.into_iter().chain(rest).take(ROWS_SHOWN).collect();
    if shown.len() < t.rows.len() {
        h.push_str(&format!(
            "<p class=\"note\">The first {} of {} rows, those that need attention first; all of them: SELECT * FROM {};</p>",
            shown.len(),
            t.rows.len(),
            esc(&t.view)
        ));
    }
    h.push_str("<table><thead><tr>");
    for c in &t.columns {
        h.push_str(&format!("<th>{}</th>", esc(c)));
    }
    h.push_str("</tr></thead><tbody>");
    for r in shown {
        let class = t.status.and_then(|i| r.get(i)).map(|s| s.replace(' ', "_")).unwrap_or_default();
        h.push_str(&format!("<tr class=\"{}\">", esc(&class)));
        for v in r {
            h.push_str(&format!("<td>{}</td>", cell_html(v)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></section>");
    h
}

/// A cell's text; one of more than three lines (a fix of many statements)
/// shows its first line and opens to the rest, so that one row does not
/// fill the page.
fn cell_html(v: &str) -> String {
    let lines: Vec<&str> = v.lines().collect();
    if lines.len() <= 3 {
        return esc(v);
    }
    format!(
        "<details><summary>{} (and {} more lines)</summary><pre>{}</pre></details>",
        esc(lines[0]),
        lines.len() - 1,
        esc(&lines[1..].join("\n"))
    )
}

/// The partition calendar: one line of boxes per table, oldest first,
/// coloured by state (past, current, future, default).
fn calendar_svg(cells: &[Cell]) -> String {
    let mut lines: Vec<(&str, Vec<&Cell>)> = Vec::new();
    for c in cells {
        match lines.last_mut() {
            Some((p, line)) if *p == c.parent => line.push(c),
            _ => lines.push((&c.parent, vec![c])),
        }
    }
    let per_line = lines.iter().map(|(_, line)| line.len()).max().unwrap_or(0);
    let (w, h, left) = (46, 26, 210);
    let width = left + per_line * w + 10;
    let height = lines.len() * (h + 8) + 10;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"partition calendar\">"
    );
    for (i, (p, line)) in lines.iter().enumerate() {
        let y = 5 + i * (h + 8);
        s.push_str(&format!("<text x=\"4\" y=\"{}\" class=\"label\">{}</text>", y + 17, esc(p)));
        for (j, c) in line.iter().enumerate() {
            let x = left + j * w;
            s.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" class=\"{}\"><title>{}</title></rect>",
                w - 3,
                esc(&c.state),
                esc(&format!("{}: {}", c.label, c.state))
            ));
            // The end of a partition's name is its period (..._2026_11 -> 26_11).
            let short = if c.state == "default" {
                "DEF".to_string()
            } else {
                c.label.chars().rev().take(5).collect::<String>().chars().rev().collect()
            };
            s.push_str(&format!("<text x=\"{}\" y=\"{}\" class=\"cell\">{}</text>", x + 4, y + 17, esc(&short)));
        }
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart of (label, value).
fn bars_svg(title: &str, bars: &[(String, f64)], unit: &str) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max).max(1.0);
    let (row, left, span) = (22, 260, 420.0);
    let height = bars.len() * row + 10;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(title),
        w = left + 520
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 5 + i * row;
        let len = (value / max * span).round().max(if *value > 0.0 { 2.0 } else { 0.0 });
        s.push_str(&format!("<text x=\"4\" y=\"{}\" class=\"label\">{}</text>", y + 14, esc(label)));
        s.push_str(&format!("<rect x=\"{left}\" y=\"{y}\" width=\"{len}\" height=\"16\" class=\"bar\"/>"));
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" class=\"value\">{}</text>",
            left as f64 + len + 6.0,
            y + 14,
            esc(&format!("{}{unit}", if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.1}") }))
        ));
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:22px}\
h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;font-size:13px;max-width:100%}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f1f1f1;white-space:nowrap}\
td{overflow-wrap:anywhere;min-width:4em}pre{white-space:pre-wrap;margin:4px 0}svg{max-width:100%;height:auto}\
tr.failed td,tr.lock_timeout td,tr.invalid td,tr.dropped td{background:#fde2e2}\
tr.behind td,tr.changed td,tr.due td,tr.bloated td,tr.rows_in_default td{background:#fff4d6}\
tr.ok td{background:#eaf7ea}.empty{color:#777}svg text{font-size:11px}svg .cell{font-size:10px}svg .label{font-size:12px}\
rect.past{fill:#c9d3df}rect.current{fill:#4f8a4f}rect.future{fill:#a9d8a9}rect.default{fill:#e6b35a}\
rect.bar{fill:#5b84b1}svg .cell{fill:#123}.note{color:#555;font-size:12px}";

/// The whole page.
/// The whole page. `calendar` holds the partitions of the tables to draw,
/// `managed_tables` counts them all.
pub fn page(
    database: &str,
    generated: &str,
    tables: &[Table],
    calendar: &[Cell],
    managed_tables: usize,
    charts: &[String],
) -> String {
    let mut h = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pg_upkeep: {db}</title>\
         <style>{STYLE}</style></head><body><h1>pg_upkeep report: database {db}</h1>\
         <p class=\"note\">Generated {gen} by upkeep.report_html().</p>",
        db = esc(database),
        gen = esc(generated)
    );
    h.push_str(&summary_html(tables));
    let mut tables = tables.iter();
    if let Some(jobs) = tables.next() {
        h.push_str(&table_html(jobs));
    }
    h.push_str("<section><h2>Partition calendar</h2>");
    if calendar.is_empty() {
        h.push_str("<p class=\"empty\">No managed partitioned table.</p>");
    } else {
        let mut drawn: Vec<&str> = calendar.iter().map(|c| c.parent.as_str()).collect();
        drawn.dedup();
        if drawn.len() < managed_tables {
            h.push_str(&format!(
                "<p class=\"note\">{} of {managed_tables} tables, those that need attention first; \
                 every partition: SELECT * FROM upkeep.partitions;</p>",
                drawn.len()
            ));
        }
        h.push_str(&calendar_svg(calendar));
        h.push_str("<p class=\"note\">Grey: past, dark green: current, light green: future, orange: DEFAULT.</p>");
    }
    h.push_str("</section>");
    for t in tables {
        h.push_str(&table_html(t));
    }
    for c in charts {
        h.push_str(c);
    }
    h.push_str("</body></html>\n");
    h
}

fn rows(sql: &str) -> Vec<Vec<String>> {
    Spi::connect(|client| {
        let table = client.select(sql, None, &[])?;
        let n = table.columns()?;
        table
            .map(|r| (1..=n).map(|i| r.get::<String>(i).map(Option::unwrap_or_default)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not read its views for the report: {e}"))
}

fn titled(title: &str, view: &str, sql: &str, status: Option<usize>, empty: &str, columns: &[&str]) -> Table {
    Table {
        title: title.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows(sql),
        status,
        empty: empty.into(),
        view: view.into(),
    }
}

/// A self-contained HTML page (no script, nothing from the network):
/// summary, jobs, partition calendar, archive and refresh status, index
/// health, with inline SVG charts. Save it and open it in a browser.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn report_html() -> String {
    crate::errors::guarded("report_html", || {
        let head = rows("SELECT current_database()::text, to_char(now(), 'YYYY-MM-DD HH24:MI:SS TZ')");
        let (database, generated) = head.first().map(|r| (r[0].clone(), r[1].clone())).unwrap_or_default();
        // The index catalogs are read once, for the table and the charts
        // (at 50,000 indexes it is the costliest read of the page).
        let indexes = crate::index_health::read();
        let found = indexes.findings(0);
        let index_rows = found
            .iter()
            .map(|f| {
                vec![
                    f.problem.to_string(),
                    f.severity.to_string(),
                    format!("{}.{}", f.table.schema, f.table.name),
                    f.index.clone().unwrap_or_default(),
                    f.size_bytes.map(size_text).unwrap_or_default(),
                    f.scans.map(|n| n.to_string()).unwrap_or_default(),
                    f.bloat_ratio.map(|r| r.to_string()).unwrap_or_default(),
                    f.recommendation.clone(),
                    f.fix_sql.clone(),
                ]
            })
            .collect();
        let tables = [
            titled(
                "Jobs",
                "upkeep.jobs",
                "SELECT job_id::text, kind, target, schedule, CASE WHEN enabled THEN 'yes' ELSE 'paused' END, \
                        coalesce(to_char(next_run, 'YYYY-MM-DD HH24:MI'), ''), coalesce(to_char(last_run, 'YYYY-MM-DD HH24:MI'), ''), \
                        coalesce(last_status, 'not run yet'), consecutive_failures::text, coalesce(last_error, '') \
                   FROM upkeep.jobs ORDER BY job_id",
                Some(7),
                "No job.",
                &["job", "kind", "target", "schedule", "enabled", "next run", "last run", "status", "failures", "last error"],
            ),
            titled(
                "Partitioned tables",
                "upkeep.partition_health",
                "SELECT job_id::text, parent::text, granularity, partitions::text, coalesce(covered_until::text, 'not covered'), \
                        future_partitions::text, coalesce(rows_in_default::text, ''), status, coalesce(hint, '') \
                   FROM upkeep.partition_health ORDER BY 2",
                Some(7),
                "No managed partitioned table.",
                &["job", "table", "granularity", "partitions", "covered until", "future", "rows in DEFAULT", "status", "hint"],
            ),
            titled(
                "Archive",
                "upkeep.archive_status",
                "SELECT source::text, mode, coalesce(archive, ''), coalesce(to_char(cutoff, 'YYYY-MM-DD'), ''), \
                        coalesce(rows_archived::text, ''), coalesce(partitions_archived::text, ''), status, coalesce(hint, '') \
                   FROM upkeep.archive_status ORDER BY 1",
                Some(6),
                "Nothing is archived.",
                &["source", "mode", "archive", "cut-off", "rows archived", "partitions archived", "status", "hint"],
            ),
            titled(
                "Materialized views",
                "upkeep.matview_status",
                "SELECT matview::text, coalesce(to_char(last_refresh, 'YYYY-MM-DD HH24:MI'), ''), \
                        coalesce(round(extract(epoch FROM last_duration)::numeric, 3)::text || ' s', ''), \
                        coalesce(changed_since::text, 'unknown'), coalesce(to_char(next_due, 'YYYY-MM-DD HH24:MI'), ''), status, \
                        coalesce(hint, '') \
                   FROM upkeep.matview_status ORDER BY 1",
                Some(5),
                "No managed materialized view.",
                &["view", "last refresh", "took", "changed since", "next due", "status", "hint"],
            ),
            Table {
                title: "Index health".into(),
                columns: ["problem", "severity", "table", "index", "size", "scans", "bloat ratio", "recommendation", "fix"]
                    .map(String::from)
                    .to_vec(),
                rows: index_rows,
                status: Some(0),
                empty: "No index problem found.".into(),
                view: "upkeep.index_health".into(),
            },
        ];
        let managed = &tables[1];
        let drawn = calendar_jobs(managed);
        let mut cells = crate::partitions::calendar(Some(drawn.clone()));
        cells.sort_by_key(|c| drawn.iter().position(|j| *j == c.job_id));
        let calendar: Vec<Cell> =
            cells.into_iter().map(|c| Cell { parent: c.parent, label: c.partition, state: c.state }).collect();
        let mut by_kind: Vec<(String, f64)> = crate::index_health::findings::Problem::counts(&found)
            .into_iter()
            .map(|(p, n)| (p.to_string(), n as f64))
            .collect();
        by_kind.sort_by(|a, b| a.0.cmp(&b.0));
        let mut bloat: Vec<(String, i64)> = crate::index_health::history::figures(indexes.indexes)
            .filter_map(|f| Some((format!("{}.{}", f.table.schema, f.index), f.bloat_bytes.filter(|b| *b > 0)?)))
            .collect();
        bloat.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let bloat: Vec<(String, f64)> = bloat
            .into_iter()
            .take(10)
            .map(|(name, b)| (name, (b as f64 / 1_048_576.0 * 10.0).round() / 10.0))
            .collect();
        let mut charts = vec![format!(
            "<section><h2>Index problems by kind</h2>{}</section>",
            bars_svg("index problems", &by_kind, "")
        )];
        if !bloat.is_empty() {
            charts.push(format!(
                "<section><h2>Most estimated index bloat</h2>{}</section>",
                bars_svg("index bloat", &bloat, " MB")
            ));
        }
        page(&database, &generated, &tables, &calendar, managed.rows.len(), &charts)
    })
}

/// Bytes as pg_size_pretty() writes them: that function, called directly.
fn size_text(bytes: i64) -> String {
    // SAFETY: pg_size_pretty(bigint) takes one non-NULL int8 and returns text.
    unsafe { pgrx::direct_function_call(pg_sys::pg_size_pretty, &[bytes.into_datum()]) }.unwrap_or_default()
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn a_cell_of_many_lines_opens_to_the_rest() {
        assert_eq!(cell_html("a\nb<c>\nc"), "a\nb&lt;c&gt;\nc");
        let fix = "CREATE INDEX \"x\" ON ONLY t (a);\nCREATE INDEX CONCURRENTLY p1 ON t1 (a);\nALTER INDEX x ATTACH PARTITION p1;\nCREATE INDEX CONCURRENTLY p2 ON t2 (a);";
        assert_eq!(
            cell_html(fix),
            "<details><summary>CREATE INDEX &quot;x&quot; ON ONLY t (a); (and 3 more lines)</summary>\
             <pre>CREATE INDEX CONCURRENTLY p1 ON t1 (a);\nALTER INDEX x ATTACH PARTITION p1;\nCREATE INDEX CONCURRENTLY p2 ON t2 (a);</pre></details>"
        );
    }

    #[test]
    fn the_page_escapes_everything_and_draws_the_calendar() {
        let t = Table {
            title: "Jobs".into(),
            columns: vec!["target".into(), "status".into()],
            rows: vec![vec!["<script>alert(1)</script>".into(), "failed".into()]],
            status: Some(1),
            empty: "none".into(),
            view: "upkeep.jobs".into(),
        };
        let cells = vec![
            Cell { parent: "public.nav".into(), label: "nav_p2026_10".into(), state: "past".into() },
            Cell { parent: "public.nav".into(), label: "nav_p2026_11".into(), state: "current".into() },
            Cell { parent: "\"Odd\"".into(), label: "x".into(), state: "default".into() },
        ];
        let html = page("db<1>", "now", &[t], &cells, 2, &[bars_svg("b", &[("a".into(), 2.0), ("b".into(), 0.0)], "")]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<tr class=\"failed\">"));
        // The summary counts the row that needs attention; all tables drawn.
        assert!(html.contains("<td>Jobs</td><td>1</td><td>1</td><td>SELECT * FROM upkeep.jobs;</td>"), "{html}");
        assert!(!html.contains("those that need attention first"));
        assert!(html.contains("database db&lt;1&gt;"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("<rect").count(), 3 + 2);
        assert!(html.contains("class=\"current\""));
        assert!(html.contains("&quot;Odd&quot;"));
        // Nothing from the network.
        assert!(
            !html.contains("http://")
                || html.matches("http://").count() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert!(!html.contains("https://"));
    }

    /// A database with 2,000 managed tables, 5 of them in trouble: the page
    /// starts with the summary, shows the troubled tables first, draws 40
    /// tables, and its tables stop at ROWS_SHOWN rows, naming their view.
    #[test]
    fn a_big_database_gets_a_page_not_a_dump() {
        let status = |i: usize| if i % 400 == 7 { "gap" } else { "ok" };
        let managed = Table {
            title: "Partitioned tables".into(),
            columns: vec!["job".into(), "table".into(), "status".into()],
            rows: (0..2000).map(|i| vec![(i + 1).to_string(), format!("public.t{i:04}"), status(i).into()]).collect(),
            status: Some(2),
            empty: "none".into(),
            view: "upkeep.partition_health".into(),
        };
        let jobs = calendar_jobs(&managed);
        assert_eq!(jobs.len(), CALENDAR_SHOWN);
        let troubled: Vec<i64> = (0..2000).filter(|i| status(*i) != "ok").map(|i| i as i64 + 1).collect();
        assert_eq!(troubled.len(), 5);
        assert!(troubled.iter().all(|j| jobs.contains(j)), "the troubled tables are drawn: {jobs:?}");
        let cells: Vec<Cell> = jobs
            .iter()
            .flat_map(|j| {
                (0..24).map(move |m| Cell {
                    parent: format!("public.t{:04}", j - 1),
                    label: format!("t_p{m:02}"),
                    state: "past".into(),
                })
            })
            .collect();
        let html = page("big", "now", &[managed], &cells, 2000, &[]);
        let summary = html.find("<h2>Summary</h2>").unwrap();
        assert!(summary < html.find("<h2>Partitioned tables</h2>").unwrap());
        assert!(html.contains("<td>Partitioned tables</td><td>2000</td><td>5</td>"), "{}", &html[..2000]);
        assert!(html.contains("The first 100 of 2000 rows, those that need attention first; all of them: SELECT * FROM upkeep.partition_health;"));
        assert!(html.contains("40 of 2000 tables, those that need attention first"));
        let body = &html[html.find("<h2>Partitioned tables</h2>").unwrap()..];
        assert_eq!(body.matches("<tr class=").count(), ROWS_SHOWN);
        // The five in trouble lead the table.
        let first_rows: Vec<&str> = body.split("<tr class=\"").skip(1).take(6).map(|r| &r[..3]).collect();
        assert_eq!(first_rows, ["gap", "gap", "gap", "gap", "gap", "ok\""]);
        assert_eq!(html.matches("<rect").count(), 40 * 24);
        assert!(html.len() < 400_000, "a page of {} bytes", html.len());
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::size_text;
    use pgrx::prelude::*;

    #[pg_test]
    fn sizes_read_like_pg_size_pretty() {
        assert_eq!(size_text(0), "0 bytes");
        assert_eq!(size_text(10_239), "10239 bytes");
        assert_eq!(size_text(10_240), "10 kB");
        assert_eq!(size_text(8_192 * 1_000), "8000 kB");
        assert_eq!(size_text(8_192 * 10_000), "78 MB");
    }
}
