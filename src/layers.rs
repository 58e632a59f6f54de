//! The layers of the crate, bottom up. Below them all is the core crate
//! (`upkeep-core`, no pgrx), whose modules the crate re-exports under the
//! same names (`calendar`, `sql`, `actions`, `problem`, `archive_target`);
//! Cargo keeps it from importing anything here. A module may import its own layer
//! and the ones below, never one above, and no modules may import each
//! other in a circle; the test below reads every `crate::` path in `src/`
//! and fails otherwise. docs/architecture.md describes each layer.

/// Layers, bottom up, and their top-level modules.
pub const LAYERS: [(&str, &[&str]); 4] = [
    (
        "foundations",
        &[
            "calendar",
            "sql",
            "statements",
            "problem",
            "errors",
            "settings",
            "regclass",
            "catalog",
            "disk",
            "citus",
            "ownership",
            "toplevel",
            "version",
        ],
    ),
    (
        "engine",
        &[
            "actions",
            "outcome",
            "access",
            "archive_target",
            "unfinished",
            "run_log",
            "job_state",
            "job_locks",
            "job",
            "interrupted",
            "executor",
            "driver",
        ],
    ),
    ("capabilities", &["partitions", "archive", "matviews", "index_health"]),
    ("callers", &["maintenance", "metrics", "report", "workers", "partman", "cron"]),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    type Graph = BTreeMap<String, BTreeSet<String>>;

    /// Modules that are not part of the product's layers.
    const OUTSIDE: [&str; 3] = ["lib", "layers", "test_support"];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|(_, modules)| modules.contains(&module))
    }

    /// Top-level module -> the top-level modules its code names as
    /// `crate::x`. Tests are left out: they may use anything.
    fn imports() -> Graph {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out = Graph::new();
        let mut files = vec![src.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == "tests.rs" || name == "properties.rs" {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy().to_string();
            let top = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let used = out.entry(top.clone()).or_default();
            for name in crate_paths(&text).into_iter().filter(|n| *n != top) {
                used.insert(name);
            }
        }
        out
    }

    /// The top-level modules named as `crate::x` in a file's code before its
    /// inline unit tests (`#[cfg(test)]` followed by `mod name {`).
    fn crate_paths(text: &str) -> BTreeSet<String> {
        let mut end = text.len();
        for (i, _) in text.match_indices("#[cfg(test)]") {
            let rest = text[i + 12..].trim_start();
            if rest.starts_with("mod ") && rest.lines().next().is_some_and(|l| l.trim_end().ends_with('{')) {
                end = i;
                break;
            }
        }
        let code = &text[..end];
        code.match_indices("crate::")
            .map(|(i, _)| code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
            .filter(|n: &String| !n.is_empty())
            .collect()
    }

    /// Imports that point to a higher layer.
    fn upward(graph: &Graph) -> Vec<String> {
        let mut out = Vec::new();
        for (module, used) in graph {
            let Some(mine) = layer_of(module) else { continue };
            for u in used {
                if let Some(theirs) = layer_of(u).filter(|t| *t > mine) {
                    out.push(format!("{module} ({}) imports {u} ({})", LAYERS[mine].0, LAYERS[theirs].0));
                }
            }
        }
        out
    }

    /// Circles of imports, each as the path that closes it.
    fn circles(graph: &Graph) -> Vec<String> {
        fn visit<'a>(
            m: &'a str,
            graph: &'a Graph,
            path: &mut Vec<&'a str>,
            seen: &mut BTreeSet<&'a str>,
            out: &mut Vec<String>,
        ) {
            if let Some(start) = path.iter().position(|p| *p == m) {
                out.push(format!("{} -> {m}", path[start..].join(" -> ")));
                return;
            }
            if !seen.insert(m) {
                return;
            }
            path.push(m);
            for next in graph.get(m).into_iter().flatten() {
                visit(next, graph, path, seen, out);
            }
            path.pop();
        }
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for m in graph.keys() {
            visit(m, graph, &mut Vec::new(), &mut seen, &mut out);
        }
        out
    }

    #[test]
    fn every_module_has_a_layer() {
        let unplaced: Vec<String> =
            imports().into_keys().filter(|m| !OUTSIDE.contains(&m.as_str()) && layer_of(m).is_none()).collect();
        assert!(unplaced.is_empty(), "modules with no layer in src/layers.rs: {unplaced:?}");
    }

    #[test]
    fn no_module_imports_a_higher_layer() {
        let up = upward(&imports());
        assert!(up.is_empty(), "imports that point up: {up:#?}");
    }

    #[test]
    fn no_modules_import_each_other_in_a_circle() {
        let found = circles(&imports());
        assert!(found.is_empty(), "modules importing each other: {found:#?}");
    }

    /// The checks catch what the crate looked like before the driver: a
    /// capability calling the worker pool, and partitions and archive
    /// importing each other.
    #[test]
    fn an_upward_import_and_a_circle_are_caught() {
        let graph: Graph =
            [("partitions", vec!["archive", "workers"]), ("archive", vec!["partitions"]), ("workers", vec!["driver"])]
                .into_iter()
                .map(|(m, used)| (m.to_string(), used.into_iter().map(String::from).collect()))
                .collect();
        assert_eq!(upward(&graph), vec!["partitions (capabilities) imports workers (callers)".to_string()]);
        assert_eq!(circles(&graph), vec!["archive -> partitions -> archive".to_string()]);
        let test_only = "use crate::sql;\n#[cfg(test)]\nmod properties;\nuse crate::calendar;\n#[cfg(test)]\nmod tests {\n use crate::workers;\n}";
        let paths: Vec<String> = crate_paths(test_only).into_iter().collect();
        assert_eq!(paths, vec!["calendar".to_string(), "sql".to_string()]);
    }
}
