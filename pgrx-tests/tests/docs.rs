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

#[test]
fn every_example_in_docs_runs() {
    let cluster = Cluster::start("docs", &["upkeep.enabled = off"]);
    let mut admin = cluster.connect("postgres");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut pages: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    pages.sort();
    let mut total = 0;
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let name = page.file_stem().unwrap().to_string_lossy().to_string();
        let sql = statements(&std::fs::read_to_string(page).unwrap());
        assert!(!sql.is_empty(), "{name}.md has no example");
        admin.batch_execute(&format!("CREATE DATABASE \"docs_{name}\"")).unwrap();
        let mut c = cluster.connect(&format!("docs_{name}"));
        c.batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
        for s in &sql {
            c.batch_execute(s).unwrap_or_else(|e| panic!("docs/{name}.md: {s}\n{e}"));
        }
        total += sql.len();
        println!("docs/{name}.md: {} statements ran", sql.len());
    }
    assert!(pages.len() >= 6 && total > 40, "{} pages, {total} statements", pages.len());
}
