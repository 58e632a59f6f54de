//! What is wrong with the indexes, in plain words, with the statement that
//! fixes it. Pure: the catalog facts in, one finding per problem out;
//! unit-tested without a database.
//!
//! Partitioned tables: an index attached to a partitioned index cannot be
//! dropped alone, so unused, duplicate and redundant are judged on the
//! partitioned index (unused when no partition's index was scanned) and
//! reported once for it. Bloat and invalid indexes are physical: reported
//! per partition, or once for the partitioned index when every partition
//! has the problem.

use crate::sql::{ident, shortened_name, QualifiedName};
use std::collections::BTreeMap;

pub const PAGE: f64 = 8192.0;

/// What an index column holds: a column of the table, by number (names
/// would cost a catalog lookup per column, and two indexes are compared on
/// the same table only), or an expression, by its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Table(i16),
    Expression(String),
}

/// One column of an index as it is defined: what it holds, operator class,
/// collation and options (DESC, NULLS FIRST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub column: Column,
    pub opclass: u32,
    pub collation: u32,
    pub option: i16,
}

/// Statistics of one index column, for the size estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnStats {
    pub width: f64,
    pub null_frac: f64,
    /// A variable-length type (text, varchar, numeric, ...).
    pub varlena: bool,
}

#[derive(Debug, Clone, Default)]
pub struct IndexFacts {
    pub oid: u32,
    pub table: QualifiedName,
    pub name: String,
    pub am: String,
    /// A partitioned index (on a partitioned table).
    pub partitioned: bool,
    /// The partitioned index it is attached to.
    pub parent: Option<u32>,
    pub unique: bool,
    pub primary: bool,
    /// Backs a constraint (primary key, unique, exclusion) or is the
    /// table's replica identity: needed whatever its scans.
    pub needed: bool,
    pub valid: bool,
    /// A CREATE INDEX or REINDEX is running on its table right now.
    pub being_built: bool,
    pub keys: Vec<KeyColumn>,
    pub include: Vec<Column>,
    pub predicate: Option<String>,
    pub size_bytes: i64,
    pub scans: i64,
    /// Days pg_upkeep's snapshots have seen it without a scan (counted from
    /// the later of their first such snapshot and the last statistics
    /// reset); None when they never did, or the last one saw scans.
    pub unused_days: Option<f64>,
    /// Days since its last scan (PostgreSQL 16 on: last_idx_scan); None on
    /// 15, or when not scanned since the statistics were reset.
    pub last_scan_days: Option<f64>,
    pub pages: i64,
    /// Live entries it should hold (the table's row estimate, or the
    /// index's for a partial index); negative when never analyzed.
    pub tuples: f64,
    pub fillfactor: f64,
    /// Statistics of each column (keys then INCLUDE); None when a column
    /// has none (never analyzed).
    pub stats: Vec<Option<ColumnStats>>,
    /// Distinct values of its only key column, when it has one and it is
    /// not unique: duplicates are stored once (deduplication).
    pub distinct: Option<f64>,
    pub dedup: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ForeignKey {
    pub table: QualifiedName,
    pub partitioned: bool,
    /// Partitions of a partitioned table (leaves), for the fix.
    pub partitions: Vec<QualifiedName>,
    pub constraint: String,
    pub references: String,
    /// Its columns' names, for the fix, and numbers, to match indexes.
    pub columns: Vec<String>,
    pub attnums: Vec<i16>,
    /// Some valid, non-partial index has these as its leading columns.
    pub indexed: bool,
}

/// How much evidence calls an index unused: days seen without a scan
/// (`upkeep.unused_index_days`; 0 takes the scan count alone).
#[derive(Debug, Clone, Copy)]
pub struct Judgement {
    pub unused_after_days: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    Invalid,
    Duplicate,
    Redundant,
    Unused,
    Bloated,
    UnindexedFk,
}

impl Problem {
    /// Every kind, for reports that count them all, zeros included.
    pub const ALL: [Problem; 6] = [
        Problem::Invalid,
        Problem::Duplicate,
        Problem::Redundant,
        Problem::Unused,
        Problem::Bloated,
        Problem::UnindexedFk,
    ];

    /// How many of `found` are of each kind, every kind in `ALL`'s order,
    /// zeros included.
    pub fn counts(found: &[Finding]) -> Vec<(Problem, usize)> {
        Problem::ALL.iter().map(|&p| (p, found.iter().filter(|f| f.problem == p).count())).collect()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::Invalid => "invalid",
            Problem::Duplicate => "duplicate",
            Problem::Redundant => "redundant",
            Problem::Unused => "unused",
            Problem::Bloated => "bloated",
            Problem::UnindexedFk => "unindexed_fk",
        })
    }
}

/// What the fix of a finding does (its statements are `fix_sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// REINDEX INDEX CONCURRENTLY.
    Rebuild,
    /// DROP INDEX (CONCURRENTLY where PostgreSQL allows it).
    Drop,
    /// CREATE INDEX (CONCURRENTLY, per partition on a partitioned table).
    CreateIndex,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub table: QualifiedName,
    pub index: Option<String>,
    pub problem: Problem,
    pub severity: &'static str,
    pub size_bytes: Option<i64>,
    pub scans: Option<i64>,
    pub bloat_bytes: Option<i64>,
    pub bloat_ratio: Option<f64>,
    pub recommendation: String,
    pub fix: Fix,
    pub fix_sql: String,
}

/// An index's fill factor from its reloptions (`fillfactor=70`); btree's
/// default, 90, when it has none.
pub fn fillfactor(reloptions: &[String]) -> f64 {
    reloptions.iter().find_map(|o| o.strip_prefix("fillfactor=")?.parse().ok()).unwrap_or(90.0)
}

/// Whether its reloptions leave btree deduplication on (the default):
/// `deduplicate_items` off in any of the spellings PostgreSQL accepts
/// turns it off.
pub fn deduplicates(reloptions: &[String]) -> bool {
    reloptions.iter().filter_map(|o| o.strip_prefix("deduplicate_items=")).all(|v| {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "off" | "of" | "false" | "f" | "fa" | "fal" | "fals" | "no" | "n" | "0"
        )
    })
}

/// Rows counted at the last ANALYZE or VACUUM (`reltuples`, over
/// `relpages` pages of the table), scaled to the table's size now, as the
/// planner does: a table loaded since then holds more rows than counted.
/// Negative (never counted) and tables counted empty stay as they are.
pub fn tuples_now(counted: f64, counted_pages: f64, pages_now: f64) -> f64 {
    if counted < 0.0 || counted_pages < 1.0 {
        return counted;
    }
    counted * (pages_now / counted_pages)
}

/// Size of an index of this shape freshly built: the pages its entries
/// need at its fill factor, plus the upper levels and the metapage. None
/// for other access methods than btree and before statistics exist.
pub fn expected_pages(ix: &IndexFacts) -> Option<f64> {
    if ix.am != "btree" || ix.tuples < 0.0 || ix.stats.iter().any(Option::is_none) {
        return None;
    }
    let align = |n: f64| (n / 8.0).ceil() * 8.0;
    let stats: Vec<ColumnStats> = ix.stats.iter().flatten().copied().collect();
    let has_nulls = stats.iter().any(|s| s.null_frac > 0.0);
    // IndexTupleData, and the null bitmap when any column has NULLs.
    let header = if has_nulls { 16.0 } else { 8.0 };
    let data: f64 = stats.iter().map(|s| s.width * (1.0 - s.null_frac)).sum();
    // Each tuple is padded to 8 bytes. When its length varies (a text key
    // longer than a few characters), the padding averages 3.5 bytes, not
    // the padding of the average length: an e-mail index is ~3% larger,
    // a (int2, text) index ~7% larger than align(average) says.
    let varies = stats.iter().any(|s| s.varlena && s.width > 8.0);
    let tuple = if varies { header + data + 3.5 } else { header + align(data) };
    // A heap pointer is 6 bytes; duplicates of one key share a tuple.
    let per_entry = match (ix.dedup && !ix.unique, ix.distinct) {
        (true, Some(d)) if d >= 1.0 && ix.tuples / d > 1.0 => {
            let dups = ix.tuples / d;
            // A posting list holds at most about a third of a page.
            let per_list = dups.min(((PAGE / 3.0 - tuple) / 6.0).max(1.0));
            (align(tuple + 6.0 * (per_list - 1.0)) + 4.0) / per_list
        }
        _ => tuple + 4.0,
    };
    let usable = (PAGE - 24.0 - 16.0) * ix.fillfactor / 100.0;
    let leaves = (ix.tuples * per_entry / usable).ceil().max(1.0);
    // Upper levels hold one downlink per page below, at 70% full.
    let mut upper = 0.0;
    let mut level = leaves;
    while level > 1.0 {
        level = (level * (tuple + 4.0) / ((PAGE - 40.0) * 0.7)).ceil();
        upper += level;
    }
    Some(leaves + upper + 1.0)
}

fn severity_by_size(bytes: i64) -> &'static str {
    match bytes {
        b if b >= 100 << 20 => "high",
        b if b >= 1 << 20 => "medium",
        _ => "low",
    }
}

fn size_words(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.1} MB", b / (1 << 20) as f64)
    } else {
        format!("{:.0} kB", b / 1024.0)
    }
}

impl IndexFacts {
    fn qualified(&self) -> String {
        QualifiedName::new(self.table.schema.clone(), self.name.clone()).quoted()
    }

    /// Same definition: access method, key columns, INCLUDE columns,
    /// predicate.
    fn same_as(&self, other: &IndexFacts) -> bool {
        self.am == other.am
            && self.keys == other.keys
            && self.include == other.include
            && self.predicate == other.predicate
    }

    /// Its key columns are a strict leading part of `other`'s, which also
    /// has every column it includes: `other` serves all it serves.
    fn covered_by(&self, other: &IndexFacts) -> bool {
        self.am == "btree"
            && other.am == "btree"
            && self.predicate == other.predicate
            && self.keys.len() < other.keys.len()
            && other.keys[..self.keys.len()] == self.keys[..]
            && self.include.iter().all(|c| other.keys.iter().any(|k| &k.column == c) || other.include.contains(c))
    }

    /// Its leading columns are the foreign key's: deleting from the table
    /// referenced looks rows up here, so it is needed even without scans
    /// (dropping it would make the key unindexed).
    fn serves(&self, fk: &ForeignKey) -> bool {
        let n = fk.attnums.len();
        self.table == fk.table
            && self.predicate.is_none()
            && self.keys.len() >= n
            && self.keys[..n].iter().all(|k| matches!(k.column, Column::Table(a) if fk.attnums.contains(&a)))
    }

    /// Kept rather than the other of a duplicate pair: unique or needed
    /// first, then the older (lower OID).
    fn preferred_over(&self, other: &IndexFacts) -> bool {
        (self.needed || self.unique, std::cmp::Reverse(self.oid))
            > (other.needed || other.unique, std::cmp::Reverse(other.oid))
    }

    fn drop_sql(&self) -> String {
        if self.partitioned {
            // PostgreSQL cannot drop a partitioned index CONCURRENTLY.
            format!("DROP INDEX {};", self.qualified())
        } else {
            format!("DROP INDEX CONCURRENTLY {};", self.qualified())
        }
    }
}

/// An index as judged: a top-level index with the scans and size of all
/// its partitions' indexes added up.
struct Logical<'a> {
    ix: &'a IndexFacts,
    scans: i64,
    size: i64,
    /// For a partitioned index, the fewest days any of its partitions'
    /// indexes was seen unscanned: all of them were, for that long.
    unused_days: Option<f64>,
    /// Days since the latest scan of it (or of any of its partitions' indexes).
    last_scan_days: Option<f64>,
}

/// Every problem found, in a stable order: table, problem, index.
pub fn findings(indexes: &[IndexFacts], fks: &[ForeignKey], judgement: Judgement, min_size_bytes: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let children: BTreeMap<u32, Vec<&IndexFacts>> =
        indexes.iter().filter_map(|i| i.parent.map(|p| (p, i))).fold(BTreeMap::new(), |mut m, (p, i)| {
            m.entry(p).or_default().push(i);
            m
        });
    // Leaves below a partitioned index, through every level.
    fn leaves<'a>(ix: &'a IndexFacts, children: &BTreeMap<u32, Vec<&'a IndexFacts>>) -> Vec<&'a IndexFacts> {
        match children.get(&ix.oid) {
            Some(kids) => kids.iter().flat_map(|k| leaves(k, children)).collect(),
            None if ix.partitioned => Vec::new(),
            None => vec![ix],
        }
    }
    let top: Vec<Logical> = indexes
        .iter()
        .filter(|i| i.parent.is_none())
        .map(|ix| {
            let l = leaves(ix, &children);
            let (scans, size, unused_days, last_scan_days) = if ix.partitioned {
                let days: Option<Vec<f64>> = l.iter().map(|c| c.unused_days).collect();
                let fewest = days.filter(|d| !d.is_empty()).map(|d| d.into_iter().fold(f64::INFINITY, f64::min));
                let latest = l.iter().filter_map(|c| c.last_scan_days).reduce(f64::min);
                (l.iter().map(|c| c.scans).sum(), l.iter().map(|c| c.size_bytes).sum(), fewest, latest)
            } else {
                (ix.scans, ix.size_bytes, ix.unused_days, ix.last_scan_days)
            };
            Logical { ix, scans, size, unused_days, last_scan_days }
        })
        .collect();
    let mut by_table: BTreeMap<&QualifiedName, Vec<&Logical>> = BTreeMap::new();
    for l in &top {
        by_table.entry(&l.ix.table).or_default().push(l);
    }
    for (table, list) in &by_table {
        for l in list.iter().filter(|l| l.ix.valid) {
            let ix = l.ix;
            let base = |problem, severity, recommendation: String, fix_sql: String| Finding {
                table: (*table).clone(),
                index: Some(ix.name.clone()),
                problem,
                severity,
                size_bytes: Some(l.size),
                scans: Some(l.scans),
                bloat_bytes: None,
                bloat_ratio: None,
                recommendation,
                fix: Fix::Drop,
                fix_sql,
            };
            if ix.needed {
                continue;
            }
            let twin =
                list.iter().find(|o| o.ix.oid != ix.oid && o.ix.valid && o.ix.same_as(ix) && o.ix.preferred_over(ix));
            if let Some(keep) = twin {
                out.push(base(
                    Problem::Duplicate,
                    severity_by_size(l.size),
                    format!(
                        "Same definition as {}, which is kept ({}). Every write maintains both; drop this one.",
                        keep.ix.name,
                        if keep.ix.needed || keep.ix.unique { "it enforces uniqueness" } else { "it is older" }
                    ),
                    ix.drop_sql(),
                ));
                continue;
            }
            if !ix.unique {
                if let Some(wider) = list.iter().find(|o| o.ix.valid && ix.covered_by(o.ix)) {
                    out.push(base(
                        Problem::Redundant,
                        severity_by_size(l.size),
                        format!(
                            "Its columns are the leading columns of {}, which serves the same lookups. Drop it.",
                            wider.ix.name
                        ),
                        ix.drop_sql(),
                    ));
                    continue;
                }
            }
            if ix.unique || fks.iter().any(|f| ix.serves(f)) {
                continue;
            }
            let after = judgement.unused_after_days;
            let evidence = if l.scans > 0 {
                // PostgreSQL 16 on says when an index was last scanned: one
                // not scanned for that long is unused whatever its count says.
                l.last_scan_days
                    .filter(|d| after > 0.0 && *d >= after)
                    .map(|d| format!("Not scanned for {d:.0} days (last_idx_scan; {} scans before that)", l.scans))
            } else {
                match l.unused_days.filter(|d| *d >= after) {
                    Some(d) => Some(format!("Never scanned in the {d:.0} days pg_upkeep's snapshots have watched it")),
                    None if after <= 0.0 => Some(
                        "Never scanned by the scan count (upkeep.unused_index_days = 0 asks for no more)".to_string(),
                    ),
                    None => None,
                }
            };
            if let Some(evidence) = evidence {
                out.push(base(
                    Problem::Unused,
                    severity_by_size(l.size),
                    format!(
                        "{evidence}, yet every write maintains it ({}). Drop it unless something rare needs it \
                         (a monthly report, queries on a replica, whose scans are not counted here).",
                        size_words(l.size)
                    ),
                    ix.drop_sql(),
                ));
            }
        }
    }
    // Physical problems: per index, or once for a partitioned index when
    // every one of its partitions' indexes has it.
    let physical = |ix: &IndexFacts| -> Option<Finding> {
        if !ix.valid {
            if ix.being_built || ix.partitioned {
                return None;
            }
            let leftover = ["_ccnew", "_ccold"].iter().any(|s| ix.name.trim_end_matches(char::is_numeric).ends_with(s));
            let (recommendation, fix, fix_sql) = if leftover || ix.unique {
                let why = if leftover {
                    "Left behind by an interrupted REINDEX CONCURRENTLY: never used, still maintained by writes. Drop it."
                } else {
                    "Invalid unique index (its build failed, often on duplicate values, which a rebuild would meet again): never \
                     used, still maintained by writes, and it enforces nothing. Drop it; remove the duplicates before creating it again."
                };
                (why.to_string(), Fix::Drop, format!("DROP INDEX CONCURRENTLY {};", ix.qualified()))
            } else {
                (
                    "Invalid (a CREATE INDEX CONCURRENTLY that failed): never used for reads, still maintained by writes. Rebuild it."
                        .to_string(),
                    Fix::Rebuild,
                    format!("REINDEX INDEX CONCURRENTLY {};", ix.qualified()),
                )
            };
            return Some(Finding {
                table: ix.table.clone(),
                index: Some(ix.name.clone()),
                problem: Problem::Invalid,
                severity: "high",
                size_bytes: Some(ix.size_bytes),
                scans: Some(ix.scans),
                bloat_bytes: None,
                bloat_ratio: None,
                recommendation,
                fix,
                fix_sql,
            });
        }
        let expected = expected_pages(ix)?;
        let ratio = ix.pages as f64 / expected;
        let bloat = ((ix.pages as f64 - expected) * PAGE) as i64;
        if ratio < 1.5 || bloat < (1 << 20) {
            return None;
        }
        Some(Finding {
            table: ix.table.clone(),
            index: Some(ix.name.clone()),
            problem: Problem::Bloated,
            severity: severity_by_size(bloat),
            size_bytes: Some(ix.size_bytes),
            scans: Some(ix.scans),
            bloat_bytes: Some(bloat),
            bloat_ratio: Some((ratio * 100.0).round() / 100.0),
            recommendation: format!(
                "About {} ({:.0}%) of it is empty space (estimated from statistics: {:.1}x the size of a fresh build). \
                 Rebuilding it online gives the space back.",
                size_words(bloat),
                100.0 * (1.0 - 1.0 / ratio),
                ratio
            ),
            fix: Fix::Rebuild,
            fix_sql: format!("REINDEX INDEX CONCURRENTLY {};", ix.qualified()),
        })
    };
    for l in &top {
        let ix = l.ix;
        if !ix.partitioned {
            out.extend(physical(ix));
            continue;
        }
        let parts = leaves(ix, &children);
        let found: Vec<Finding> = parts.iter().filter_map(|c| physical(c)).collect();
        let all_same =
            |p: Problem| !parts.is_empty() && found.len() == parts.len() && found.iter().all(|f| f.problem == p);
        if all_same(Problem::Bloated) {
            let bloat: i64 = found.iter().filter_map(|f| f.bloat_bytes).sum();
            out.push(Finding {
                table: ix.table.clone(),
                index: Some(ix.name.clone()),
                problem: Problem::Bloated,
                severity: severity_by_size(bloat),
                size_bytes: Some(l.size),
                scans: Some(l.scans),
                bloat_bytes: Some(bloat),
                bloat_ratio: Some(((l.size as f64 / (l.size - bloat).max(1) as f64) * 100.0).round() / 100.0),
                recommendation: format!(
                    "Every partition's index is bloated, about {} in all (estimated from statistics). Rebuilding them online \
                     gives the space back.",
                    size_words(bloat)
                ),
                fix: Fix::Rebuild,
                fix_sql: format!("REINDEX INDEX CONCURRENTLY {};", ix.qualified()),
            });
        } else {
            out.extend(found);
        }
    }
    for fk in fks.iter().filter(|f| !f.indexed) {
        let cols: Vec<String> = fk.columns.iter().map(|c| ident(c)).collect();
        let cols = cols.join(", ");
        let fix_sql = if fk.partitioned {
            // CONCURRENTLY is not possible on a partitioned table: an index
            // on the parent only, each partition's built concurrently and
            // attached (which makes the parent's valid). One statement each.
            let index_name = |table: &str| ident(&shortened_name(table, &format!("{}_idx", fk.columns.join("_"))));
            let name = index_name(&fk.table.name);
            let parent = format!("{}.{name}", ident(&fk.table.schema));
            let mut s = vec![format!("CREATE INDEX {name} ON ONLY {} ({cols});", fk.table.quoted())];
            for p in &fk.partitions {
                let child = index_name(&p.name);
                s.push(format!("CREATE INDEX CONCURRENTLY {child} ON {} ({cols});", p.quoted()));
                s.push(format!("ALTER INDEX {parent} ATTACH PARTITION {}.{child};", ident(&p.schema)));
            }
            s.join("\n")
        } else {
            format!("CREATE INDEX CONCURRENTLY ON {} ({cols});", fk.table.quoted())
        };
        out.push(Finding {
            table: fk.table.clone(),
            index: None,
            problem: Problem::UnindexedFk,
            severity: "medium",
            size_bytes: None,
            scans: None,
            bloat_bytes: None,
            bloat_ratio: None,
            recommendation: format!(
                "Foreign key {} ({}) references {}, and no index starts with its columns: every DELETE or key UPDATE there \
                 scans this table, and joins on it cannot use an index. Index the columns.",
                fk.constraint,
                fk.columns.join(", "),
                fk.references
            ),
            fix: Fix::CreateIndex,
            fix_sql,
        });
    }
    out.retain(|f| f.size_bytes.is_none_or(|s| s >= min_size_bytes));
    out.sort_by(|a, b| (&a.table, a.problem, &a.index).cmp(&(&b.table, b.problem, &b.index)));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn variable_length_keys_pad_by_half_a_word_on_average() {
        // 100,000 e-mail addresses of 51 bytes on average: pageinspect
        // measured 62.5 bytes per leaf tuple; align(8 + 51) would say 64.
        let mut ix = index(10, "emails", &["email"]);
        ix.tuples = 100_000.0;
        ix.unique = true;
        ix.stats = vec![Some(ColumnStats { width: 51.0, null_frac: 0.0, varlena: true })];
        let varying = expected_pages(&ix).unwrap();
        let per_leaf = (8192.0 - 40.0) * 0.9 / (62.5 + 4.0);
        assert!((varying - 100_000.0 / per_leaf).abs() < 20.0, "{varying}");
        // Short codes hardly vary: the padding of their length.
        ix.stats = vec![Some(ColumnStats { width: 3.0, null_frac: 0.0, varlena: true })];
        let short = expected_pages(&ix).unwrap();
        ix.stats = vec![Some(ColumnStats { width: 3.0, null_frac: 0.0, varlena: false })];
        assert_eq!(short, expected_pages(&ix).unwrap());
    }

    #[test]
    fn rows_counted_long_ago_are_scaled_to_the_table_now() {
        assert_eq!(tuples_now(1000.0, 10.0, 40.0), 4000.0);
        assert_eq!(tuples_now(1000.0, 10.0, 10.0), 1000.0);
        assert_eq!(tuples_now(-1.0, 0.0, 40.0), -1.0);
        assert_eq!(tuples_now(0.0, 0.0, 40.0), 0.0);
    }

    #[test]
    fn reloptions_give_the_fill_factor_and_deduplication() {
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(super::fillfactor(&[]), 90.0);
        assert_eq!(super::fillfactor(&opts(&["deduplicate_items=on", "fillfactor=70"])), 70.0);
        assert!(super::deduplicates(&[]));
        assert!(super::deduplicates(&opts(&["fillfactor=70", "deduplicate_items=true"])));
        for off in ["off", "false", "OFF", "no", "0"] {
            assert!(!super::deduplicates(&opts(&[&format!("deduplicate_items={off}")])), "{off}");
        }
    }

    use super::*;

    /// A column by its name in these tests' tables (numbered by a fixed
    /// list), or an expression.
    fn column(def: &str) -> Column {
        const NAMES: &[&str] =
            &["id", "customer_id", "created_at", "email", "note", "total", "order id", "region", "at", "status"];
        match NAMES.iter().position(|n| *n == def) {
            Some(i) => Column::Table(i as i16 + 1),
            None => Column::Expression(def.into()),
        }
    }

    fn col(def: &str) -> KeyColumn {
        KeyColumn { column: column(def), opclass: 1978, collation: 0, option: 0 }
    }

    fn index(oid: u32, name: &str, keys: &[&str]) -> IndexFacts {
        IndexFacts {
            oid,
            table: QualifiedName::new("public", "orders"),
            name: name.into(),
            am: "btree".into(),
            valid: true,
            keys: keys.iter().map(|k| col(k)).collect(),
            size_bytes: 8192 * 100,
            scans: 5,
            unused_days: Some(30.0),
            pages: 100,
            tuples: 20_000.0,
            fillfactor: 90.0,
            stats: keys.iter().map(|_| Some(ColumnStats { width: 4.0, null_frac: 0.0, varlena: false })).collect(),
            dedup: true,
            ..IndexFacts::default()
        }
    }

    const OLD: Judgement = Judgement { unused_after_days: 7.0 };

    fn found(ix: &[IndexFacts]) -> Vec<(String, Problem)> {
        findings(ix, &[], OLD, 0).into_iter().map(|f| (f.index.unwrap_or_default(), f.problem)).collect()
    }

    #[test]
    fn duplicates_keep_the_unique_or_the_older_one() {
        let a = index(10, "a", &["customer_id"]);
        let b = index(20, "b", &["customer_id"]);
        assert_eq!(found(&[a.clone(), b.clone()]), vec![("b".into(), Problem::Duplicate)]);
        let mut u = index(30, "u", &["customer_id"]);
        u.unique = true;
        u.needed = true;
        let got = found(&[a.clone(), u]);
        assert_eq!(got, vec![("a".into(), Problem::Duplicate)]);
        // Different opclass, collation, order, predicate or INCLUDE: not duplicates.
        for change in 0..5 {
            let mut c = index(20, "c", &["customer_id"]);
            match change {
                0 => c.keys[0].opclass = 3128,
                1 => c.keys[0].collation = 950,
                2 => c.keys[0].option = 3,
                3 => c.predicate = Some("status = 'open'".into()),
                _ => c.include = vec![column("total")],
            }
            assert_eq!(found(&[a.clone(), c]), vec![], "change {change}");
        }
        let f = findings(&[a, b], &[], OLD, 0);
        assert_eq!(f[0].fix_sql, r#"DROP INDEX CONCURRENTLY "public"."b";"#);
        assert!(f[0].recommendation.contains("Same definition as a"), "{}", f[0].recommendation);
    }

    #[test]
    fn a_leading_prefix_is_redundant_unless_unique_partial_or_covering_more() {
        let short = index(10, "short", &["customer_id"]);
        let long = index(20, "long", &["customer_id", "created_at"]);
        assert_eq!(found(&[short.clone(), long.clone()]), vec![("short".into(), Problem::Redundant)]);
        let mut unique = short.clone();
        unique.unique = true;
        assert_eq!(found(&[unique, long.clone()]), vec![]);
        let mut partial = short.clone();
        partial.predicate = Some("active".into());
        assert_eq!(found(&[partial, long.clone()]), vec![]);
        // A covering index on the same key is not made redundant by a wider one's key...
        let mut covering = short.clone();
        covering.include = vec![column("total")];
        assert_eq!(found(&[covering.clone(), long.clone()]), vec![]);
        // ...nor does it make the plain one redundant (same keys: different jobs).
        assert_eq!(
            found(&[short.clone(), {
                let mut c = covering;
                c.oid = 30;
                c
            }]),
            vec![]
        );
        // Not a prefix: other column order, other expression, other opclass.
        let other = index(20, "other", &["created_at", "customer_id"]);
        assert_eq!(found(&[short.clone(), other]), vec![]);
        let expr = index(20, "expr", &["lower(email)", "id"]);
        assert_eq!(found(&[index(10, "email", &["email"]), expr.clone()]), vec![]);
        assert_eq!(found(&[index(10, "lower", &["lower(email)"]), expr]), vec![("lower".into(), Problem::Redundant)]);
        let mut pattern = long;
        pattern.keys[0].opclass = 10_044;
        assert_eq!(found(&[short, pattern]), vec![]);
    }

    #[test]
    fn unused_needs_days_of_evidence_and_spares_constraint_indexes() {
        let mut idle = index(10, "idle", &["note"]);
        idle.scans = 0;
        let mut pk = index(20, "orders_pkey", &["id"]);
        pk.scans = 0;
        pk.unique = true;
        pk.primary = true;
        pk.needed = true;
        assert_eq!(found(&[idle.clone(), pk]), vec![("idle".into(), Problem::Unused)]);
        let f = findings(&[idle.clone()], &[], OLD, 0);
        assert!(
            f[0].recommendation.contains("in the 30 days pg_upkeep's snapshots have watched it"),
            "{}",
            f[0].recommendation
        );
        // Watched for less than the setting, or not at all (a new index, or
        // one the last snapshot saw scanned): nothing to say yet.
        for days in [Some(2.0), Some(6.9), None] {
            let mut young = idle.clone();
            young.unused_days = days;
            assert!(findings(&[young.clone()], &[], OLD, 0).is_empty(), "{days:?}");
            // unused_index_days = 0 takes the scan count alone, and says so.
            let f = findings(&[young], &[], Judgement { unused_after_days: 0.0 }, 0);
            assert_eq!(f[0].problem, Problem::Unused);
            assert!(days.is_some() || f[0].recommendation.contains("unused_index_days = 0"), "{}", f[0].recommendation);
        }
        // An index that serves a foreign key is needed without scans.
        let mut fk_index = index(30, "orders_customer", &["customer_id"]);
        fk_index.scans = 0;
        let fk = ForeignKey {
            table: QualifiedName::new("public", "orders"),
            columns: vec!["customer_id".into()],
            attnums: vec![2],
            indexed: true,
            ..ForeignKey::default()
        };
        assert!(findings(&[fk_index.clone()], &[fk], OLD, 0).is_empty());
        assert_eq!(findings(&[fk_index], &[], OLD, 0)[0].problem, Problem::Unused);
        // min_size_bytes leaves out small indexes.
        assert!(findings(&[idle], &[], OLD, 10 << 20).is_empty());
    }

    /// PostgreSQL 16 on: an index scanned long ago, and not since, is
    /// unused; one scanned recently is not, whatever the snapshots say.
    #[test]
    fn last_idx_scan_tells_an_index_scanned_long_ago_from_one_in_use() {
        let mut once = index(10, "orders_note", &["note"]);
        once.unused_days = None;
        once.scans = 12;
        for (days, unused) in
            [(Some(40.0), true), (Some(7.0), true), (Some(6.5), false), (Some(0.1), false), (None, false)]
        {
            once.last_scan_days = days;
            let f = findings(&[once.clone()], &[], OLD, 0);
            assert_eq!(f.iter().any(|f| f.problem == Problem::Unused), unused, "{days:?}: {f:?}");
            if unused {
                let expected =
                    format!("Not scanned for {:.0} days (last_idx_scan; 12 scans before that)", days.unwrap());
                assert!(f[0].recommendation.starts_with(&expected), "{}", f[0].recommendation);
            }
            // unused_index_days = 0 asks for the scan count alone: 12 scans are use.
            assert!(findings(&[once.clone()], &[], Judgement { unused_after_days: 0.0 }, 0).is_empty());
        }
        // A partitioned index: the latest scan of any partition's index counts.
        let mut top = index(1, "events_at", &["at"]);
        top.partitioned = true;
        top.unused_days = None;
        let leaf = |oid, last: Option<f64>| IndexFacts {
            parent: Some(1),
            scans: i64::from(last.is_some()),
            last_scan_days: last,
            unused_days: None,
            ..index(oid, &format!("events_p{oid}_at"), &["at"])
        };
        let old_and_new = [top.clone(), leaf(2, Some(90.0)), leaf(3, Some(1.0)), leaf(4, None)];
        assert!(findings(&old_and_new, &[], OLD, 0).is_empty());
        let all_old = [top, leaf(2, Some(90.0)), leaf(3, Some(30.0)), leaf(4, None)];
        let f = findings(&all_old, &[], OLD, 0);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].recommendation.starts_with("Not scanned for 30 days"), "{}", f[0].recommendation);
    }

    #[test]
    fn invalid_indexes_are_rebuilt_leftovers_dropped_builds_in_progress_left_alone() {
        let mut broken = index(10, "orders_total_idx", &["total"]);
        broken.valid = false;
        let mut leftover = index(11, "orders_total_idx_ccnew1", &["total"]);
        leftover.valid = false;
        let f = findings(&[broken.clone(), leftover], &[], OLD, 0);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].fix_sql, r#"REINDEX INDEX CONCURRENTLY "public"."orders_total_idx";"#);
        assert_eq!(f[1].fix_sql, r#"DROP INDEX CONCURRENTLY "public"."orders_total_idx_ccnew1";"#);
        assert_eq!((f[0].fix, f[1].fix), (Fix::Rebuild, Fix::Drop));
        broken.being_built = true;
        assert!(findings(&[broken], &[], OLD, 0).is_empty());
    }

    #[test]
    fn the_size_estimate_matches_a_fresh_build_and_finds_bloat() {
        // 1M int4 keys: 16-byte tuples + 4-byte pointers, ~367 per leaf at 90%.
        let mut ix = index(10, "ids", &["id"]);
        ix.tuples = 1_000_000.0;
        ix.unique = true;
        let expected = expected_pages(&ix).unwrap();
        assert!((2_700.0..2_800.0).contains(&expected), "{expected}");
        ix.pages = expected as i64;
        assert!(found(&[ix.clone()]).is_empty());
        ix.pages = (expected * 2.5) as i64;
        ix.size_bytes = ix.pages * 8192;
        let f = findings(&[ix.clone()], &[], OLD, 0);
        assert_eq!(f[0].problem, Problem::Bloated);
        assert_eq!(f[0].bloat_ratio, Some(2.5));
        assert_eq!(f[0].fix_sql, r#"REINDEX INDEX CONCURRENTLY "public"."ids";"#);
        // Duplicates stored once: 100 distinct values need far fewer pages.
        let mut dup = index(11, "status", &["status"]);
        dup.tuples = 1_000_000.0;
        dup.distinct = Some(100.0);
        assert!(expected_pages(&dup).unwrap() < expected / 2.0);
        // No statistics yet, or not a btree: no estimate.
        dup.stats[0] = None;
        assert_eq!(expected_pages(&dup), None);
        ix.am = "hash".into();
        assert_eq!(expected_pages(&ix), None);
    }

    #[test]
    fn partitioned_indexes_are_judged_once() {
        let mut parent = index(100, "events_at_idx", &["at"]);
        parent.partitioned = true;
        parent.table = QualifiedName::new("public", "events");
        parent.size_bytes = 0;
        parent.scans = 0;
        let child = |oid: u32, scans: i64| {
            let mut c = index(oid, &format!("events_p{oid}_at_idx"), &["at"]);
            c.parent = Some(100);
            c.table = QualifiedName::new("public", format!("events_p{oid}"));
            c.scans = scans;
            c
        };
        let all = [parent.clone(), child(101, 0), child(102, 0)];
        let f = findings(&all, &[], OLD, 0);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].index.as_deref(), f[0].problem), (Some("events_at_idx"), Problem::Unused));
        assert_eq!(f[0].size_bytes, Some(2 * 8192 * 100));
        assert_eq!(f[0].fix_sql, r#"DROP INDEX "public"."events_at_idx";"#);
        // One partition's index scanned: the index is used.
        assert!(findings(&[parent.clone(), child(101, 0), child(102, 3)], &[], OLD, 0).is_empty());
        // The evidence is the shortest watch among the partitions' indexes;
        // one not watched yet (a new partition) holds it back.
        let watched = |oid, days| {
            let mut c = child(oid, 0);
            c.unused_days = days;
            c
        };
        let f = findings(&[parent.clone(), watched(101, Some(40.0)), watched(102, Some(9.0))], &[], OLD, 0);
        assert!(f[0].recommendation.contains("in the 9 days"), "{}", f[0].recommendation);
        assert!(findings(&[parent.clone(), watched(101, Some(40.0)), watched(102, Some(3.0))], &[], OLD, 0).is_empty());
        assert!(findings(&[parent.clone(), watched(101, Some(40.0)), watched(102, None)], &[], OLD, 0).is_empty());
        // Bloat on every partition: one row for the partitioned index; on one: that one.
        let bloated = |oid| {
            let mut c = child(oid, 9);
            c.tuples = 1_000_000.0;
            c.pages = 8_000;
            c.size_bytes = 8_000 * 8192;
            c
        };
        let f = findings(&[parent.clone(), bloated(101), bloated(102)], &[], OLD, 0);
        assert_eq!(f.iter().map(|x| x.index.clone().unwrap()).collect::<Vec<_>>(), ["events_at_idx"]);
        assert_eq!(f[0].fix_sql, r#"REINDEX INDEX CONCURRENTLY "public"."events_at_idx";"#);
        let f = findings(&[parent, bloated(101), child(102, 9)], &[], OLD, 0);
        assert_eq!(f.iter().map(|x| x.index.clone().unwrap()).collect::<Vec<_>>(), ["events_p101_at_idx"]);
    }

    #[test]
    fn unindexed_foreign_keys_get_a_concurrent_index() {
        let fk = ForeignKey {
            table: QualifiedName::new("Sales", "order lines"),
            constraint: "order_fk".into(),
            references: "\"Sales\".orders".into(),
            columns: vec!["order id".into(), "region".into()],
            attnums: vec![7, 8],
            ..ForeignKey::default()
        };
        let f = findings(&[], std::slice::from_ref(&fk), OLD, 0);
        assert_eq!(f[0].problem, Problem::UnindexedFk);
        assert_eq!(f[0].index, None);
        assert_eq!(f[0].fix_sql, r#"CREATE INDEX CONCURRENTLY ON "Sales"."order lines" ("order id", "region");"#);
        let mut parted = fk.clone();
        parted.partitioned = true;
        parted.partitions = vec![QualifiedName::new("Sales", "order lines 2026")];
        let f = findings(&[], &[parted.clone()], OLD, 0);
        assert_eq!(
            f[0].fix_sql,
            "CREATE INDEX \"order lines_order id_region_idx\" ON ONLY \"Sales\".\"order lines\" (\"order id\", \"region\");\n\
             CREATE INDEX CONCURRENTLY \"order lines 2026_order id_region_idx\" ON \"Sales\".\"order lines 2026\" (\"order id\", \"region\");\n\
             ALTER INDEX \"Sales\".\"order lines_order id_region_idx\" ATTACH PARTITION \"Sales\".\"order lines 2026_order id_region_idx\";"
        );
        // 63-byte partition names that differ only at their end: the index
        // names fit in 63 bytes and stay distinct (PostgreSQL would cut
        // "<partition>_<columns>_idx" to the same 63 bytes for all of them).
        let long = |month: &str| QualifiedName::new("Sales", format!("{}_p2026_{month}", "order_lines_".repeat(4)));
        parted.partitions = vec![long("01"), long("02")];
        let sql = findings(&[], &[parted], OLD, 0).remove(0).fix_sql;
        let created: Vec<&str> =
            sql.lines().filter_map(|l| l.strip_prefix("CREATE INDEX CONCURRENTLY ")?.split(" ON ").next()).collect();
        assert_eq!(created.len(), 2, "{sql}");
        assert_ne!(created[0], created[1]);
        assert!(created.iter().all(|n| n.len() <= 63 + 2), "{created:?}");
        assert!(sql.contains(&format!("ATTACH PARTITION \"Sales\".{};", created[1])), "{sql}");
        let indexed = ForeignKey { indexed: true, ..fk };
        assert!(findings(&[], &[indexed], OLD, 0).is_empty());
    }
}
