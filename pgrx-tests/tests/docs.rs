//! The reference pages in docs/ have runnable examples: every ```sql block
//! of a page runs, statement by statement and in order, without an error,
//! in a fresh database of its own with the extension.

use upkeep_cluster_tests::Cluster;

/// The statements of a page's sql blocks: a statement ends with a line
/// that ends with a semicolon.
fn statements(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sql = false;
    let mut current = String::new();
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            in_sql = line.trim() == "```sql";
            continue;
        }
        if !in_sql || line.trim().is_empty() || line.trim_start().starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    assert!(current.trim().is_empty(), "an unfinished statement: {current}");
    out
}

/// The extensions a page's examples need besides pg_upkeep, named in a
/// line `<!-- examples need: pg_partman -->`.
fn needs(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.trim().strip_prefix("<!-- examples need:")?.strip_suffix("-->").map(str::to_string))
        .flat_map(|l| l.split(',').map(|e| e.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

/// Runs the examples of every page whose needs `wanted` accepts, each page
/// in a fresh database; returns the pages and statements run.
fn run_pages(cluster_name: &str, settings: &[&str], wanted: impl Fn(&[String]) -> bool) -> (usize, usize) {
    let mut all = vec!["upkeep.enabled = off"];
    all.extend_from_slice(settings);
    let cluster = Cluster::start(cluster_name, &all);
    let mut admin = cluster.connect("postgres");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut pages: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    pages.sort();
    let (mut run, mut total) = (0, 0);
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let name = page.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(page).unwrap();
        if !wanted(&needs(&text)) {
            continue;
        }
        let sql = statements(&text);
        assert!(!sql.is_empty(), "{name}.md has no example");
        admin.batch_execute(&format!("CREATE DATABASE \"docs_{name}\"")).unwrap();
        let mut c = cluster.connect(&format!("docs_{name}"));
        c.batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
        for s in &sql {
            c.batch_execute(s).unwrap_or_else(|e| panic!("docs/{name}.md: {s}\n{e}"));
        }
        run += 1;
        total += sql.len();
        println!("docs/{name}.md: {} statements ran", sql.len());
    }
    (run, total)
}

#[test]
fn every_example_in_docs_runs() {
    let (pages, total) = run_pages("docs", &[], |needs| needs.is_empty());
    assert!(pages >= 6 && total > 40, "{pages} pages, {total} statements");
}

/// Pages about switching from pg_partman and pg_cron run where both are
/// installed (scripts/test.sh skips this test elsewhere, by its name),
/// pg_cron keeping its jobs in the page's database.
#[test]
fn the_docs_examples_that_need_pg_partman_and_pg_cron_run() {
    let settings = ["shared_preload_libraries = 'pg_upkeep, pg_cron'", "cron.database_name = 'docs_migrating'"];
    let (pages, total) = run_pages("docs-switching", &settings, |needs| !needs.is_empty());
    assert!(pages >= 1 && total > 10, "{pages} pages, {total} statements");
}
