//! What a managed view reads, summed up for its plan: the relations whose
//! changes count (its bases), the text its fingerprint is made of, why its
//! changes might go unseen, and what is not tracked yet. Pure: the walk of
//! the catalogs that finds these relations is the extension's.

use super::plan::Untracked;
use crate::sql::QualifiedName;

/// One relation a view reads (through plain views and partitions), as the
/// catalogs describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub relid: u32,
    /// Its `pg_class.relkind`.
    pub kind: u8,
    pub table: QualifiedName,
    /// The trigger tracking its changes: the row version of its catalog
    /// row (`xmin`) and its `tgenabled`.
    pub tracking: Option<(u32, u8)>,
    /// A logical replication subscription writes it.
    pub replicated: bool,
    /// The view's owner may create the tracking trigger on it.
    pub may_track: bool,
}

/// What the plan needs of a view's reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tables and materialized views, whose changes are recorded.
    pub bases: Vec<u32>,
    /// Every relation with its kind and tracking: a refresh remembers a
    /// hash of it, and another text later means the view reads otherwise.
    pub seen: String,
    /// Why changes of what it reads might go unseen, by relation.
    pub unsure: Vec<String>,
    pub untracked: Vec<Untracked>,
}

const BASE_KINDS: &[u8] = b"rpm";

/// Sums up the relations a view reads (any order), given whether
/// refreshes of materialized views are recorded (the event trigger
/// `upkeep_track_refreshes` is enabled).
pub fn summarize(reads: &[Read], refreshes_recorded: bool) -> Summary {
    let mut reads: Vec<&Read> = reads.iter().collect();
    reads.sort_by_key(|r| r.relid);
    reads.dedup_by_key(|r| r.relid);
    let seen = reads
        .iter()
        .map(|r| match r.tracking {
            Some((xmin, enabled)) => format!("{}{}{xmin}{}", r.relid, r.kind as char, enabled as char),
            None => format!("{}{}-", r.relid, r.kind as char),
        })
        .collect::<Vec<_>>()
        .join(",");
    Summary {
        bases: reads.iter().filter(|r| BASE_KINDS.contains(&r.kind)).map(|r| r.relid).collect(),
        seen,
        unsure: reads.iter().filter_map(|r| unsure(r, refreshes_recorded)).collect(),
        untracked: reads
            .iter()
            .filter(|r| matches!(r.kind, b'r' | b'p') && r.tracking.is_none())
            .map(|r| Untracked { table: r.table.clone(), allowed: r.may_track })
            .collect(),
    }
}

/// Why changes of one relation might go unseen, if they might.
fn unsure(r: &Read, refreshes_recorded: bool) -> Option<String> {
    let t = &r.table;
    match (r.kind, r.tracking) {
        (b'v', _) => None,
        (b'f', _) => Some(format!("reads foreign table {t}, whose changes cannot be seen")),
        (k, _) if !BASE_KINDS.contains(&k) => Some(format!("reads {t}, which is not a table")),
        (b'r' | b'p', None) => Some(format!("changes to {t} are not tracked yet")),
        (_, Some((_, b'D'))) => Some(format!("the trigger tracking changes to {t} is disabled")),
        (b'm', _) if !refreshes_recorded => Some(format!(
            "refreshes of {t} cannot be seen: event trigger upkeep_track_refreshes is missing or disabled"
        )),
        _ if r.replicated => Some(format!("{t} is written by logical replication, whose changes are not all seen")),
        _ => None,
    }
}

/// A view's fingerprint now, against the one its last refresh recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    pub fingerprint: String,
    /// The record is of the same relations, tracking and rules.
    pub same: bool,
    /// Its query, or a plain view's it reads, uses the clock.
    pub clock: bool,
}

/// The fingerprint of what a view reads (`Summary::seen`), of how
/// refreshes are recorded (`refreshes`: the event trigger's row version
/// and state), of the row versions of the rules read through, (oid,
/// xmin, cmin), and of whether one uses the clock, compared with the one its
/// last refresh recorded. Whether a rule uses the clock is costly to learn
/// (rules are stored compressed), so `clock` is asked only when the record
/// does not tell: a record made of the same rule versions without the
/// clock means the same rules, still without it. A record made before
/// rules counted (`md5(seen || refreshes)`) is the same when what it
/// covered is.
pub fn compare<E>(
    recorded: Option<&str>,
    seen: &str,
    refreshes: &str,
    rules: &[(u32, u32, u32)],
    clock: impl FnOnce() -> Result<bool, E>,
) -> Result<Compared, E> {
    let quiet = fingerprint(seen, refreshes, rules, false);
    if recorded == Some(quiet.as_str()) {
        return Ok(Compared { fingerprint: quiet, same: true, clock: false });
    }
    let clock = clock()?;
    let now = if clock { fingerprint(seen, refreshes, rules, true) } else { quiet };
    let same = recorded.is_some_and(|r| r == now || r == md5_hex(&[seen, refreshes]));
    Ok(Compared { fingerprint: now, same, clock })
}

fn fingerprint(seen: &str, refreshes: &str, rules: &[(u32, u32, u32)], clock: bool) -> String {
    let mut rules = rules.to_vec();
    rules.sort_unstable();
    let versions = rules.iter().map(|(oid, xmin, cmin)| format!("{oid}:{xmin}:{cmin}")).collect::<Vec<_>>().join(",");
    md5_hex(&[seen, refreshes, ";rules ", &versions, if clock { ";clock" } else { "" }])
}

/// The hex MD5 of the texts one after the other, as SQL's `md5()` gives it.
fn md5_hex(parts: &[&str]) -> String {
    use md5::Digest;
    let digest = parts.iter().fold(md5::Md5::new(), |h, p| h.chain_update(p)).finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a stored rule (its node tree as text) uses the clock: a clock
/// expression (`CURRENT_DATE` and the like) or a call of one of the
/// functions (`clock_functions`, by OID).
pub fn mentions_clock(tree: &[u8], clock_functions: &[u32]) -> bool {
    if memchr::memmem::find(tree, b"{SQLVALUEFUNCTION ").is_some() {
        return true;
    }
    const CALL: &[u8] = b":funcid ";
    memchr::memmem::find_iter(tree, CALL).any(|at| {
        let digits = &tree[at + CALL.len()..];
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        let oid = std::str::from_utf8(&digits[..n]).ok().and_then(|s| s.parse::<u32>().ok());
        oid.is_some_and(|o| clock_functions.contains(&o))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(relid: u32, kind: u8, tracking: Option<(u32, u8)>) -> Read {
        Read {
            relid,
            kind,
            table: QualifiedName::new("public", format!("t{relid}")),
            tracking,
            replicated: false,
            may_track: true,
        }
    }

    #[test]
    fn bases_and_seen_are_in_relation_order_once_each() {
        let reads = [
            read(30, b'r', Some((700, b'O'))),
            read(10, b'v', None),
            read(20, b'm', None),
            read(30, b'r', Some((700, b'O'))),
        ];
        let s = summarize(&reads, true);
        assert_eq!(s.bases, vec![20, 30]);
        assert_eq!(s.seen, "10v-,20m-,30r700O");
        assert!(s.unsure.is_empty(), "{:?}", s.unsure);
        assert!(s.untracked.is_empty());
    }

    #[test]
    fn nothing_read_is_an_empty_text() {
        assert_eq!(summarize(&[], true), Summary::default());
    }

    #[test]
    fn each_reason_to_be_unsure_is_named_once_per_relation() {
        let mut replicated = read(6, b'r', Some((1, b'A')));
        replicated.replicated = true;
        let mut untracked_denied = read(7, b'p', None);
        untracked_denied.may_track = false;
        let reads = [
            read(1, b'f', None),
            read(2, b'S', None),
            read(3, b'r', None),
            read(4, b'r', Some((9, b'D'))),
            read(5, b'm', None),
            replicated,
            untracked_denied,
            read(8, b'v', None),
        ];
        let s = summarize(&reads, false);
        assert_eq!(
            s.unsure,
            vec![
                "reads foreign table public.t1, whose changes cannot be seen",
                "reads public.t2, which is not a table",
                "changes to public.t3 are not tracked yet",
                "the trigger tracking changes to public.t4 is disabled",
                "refreshes of public.t5 cannot be seen: event trigger upkeep_track_refreshes is missing or disabled",
                "public.t6 is written by logical replication, whose changes are not all seen",
                "changes to public.t7 are not tracked yet",
            ]
        );
        assert_eq!(
            s.untracked,
            vec![
                Untracked { table: QualifiedName::new("public", "t3"), allowed: true },
                Untracked { table: QualifiedName::new("public", "t7"), allowed: false },
            ]
        );
        assert_eq!(s.bases, vec![3, 4, 5, 6, 7]);
        assert!(summarize(&[read(5, b'm', None)], true).unsure.is_empty());
    }

    fn no_clock() -> Result<bool, ()> {
        panic!("the clock was asked for")
    }

    fn ok(clock: bool) -> impl FnOnce() -> Result<bool, ()> {
        move || Ok(clock)
    }

    #[test]
    fn a_record_of_the_same_rules_without_the_clock_is_trusted_without_reading_them() {
        let first = compare(None, "10v-,30r700O", "812O", &[(5, 90, 0), (4, 91, 0)], ok(false)).unwrap();
        assert!(!first.same && !first.clock);
        let again =
            compare(Some(&first.fingerprint), "10v-,30r700O", "812O", &[(4, 91, 0), (5, 90, 0)], no_clock).unwrap();
        assert_eq!(again, Compared { fingerprint: first.fingerprint.clone(), same: true, clock: false });
    }

    #[test]
    fn a_rule_replaced_or_tracking_changed_is_another_fingerprint() {
        let first = compare(None, "10v-,30r700O", "812O", &[(5, 90, 0)], ok(false)).unwrap().fingerprint;
        let asked = std::cell::Cell::new(false);
        let replaced = compare(Some(&first), "10v-,30r700O", "812O", &[(5, 95, 0)], || {
            asked.set(true);
            Ok::<_, ()>(false)
        })
        .unwrap();
        assert!(asked.get() && !replaced.same);
        let same_transaction = compare(Some(&first), "10v-,30r700O", "812O", &[(5, 90, 3)], ok(false)).unwrap();
        assert!(!same_transaction.same, "replaced by a later command of the same transaction");
        assert!(!compare(Some(&first), "10v-,30r700D", "812O", &[(5, 90, 0)], ok(false)).unwrap().same);
        assert!(!compare(Some(&first), "10v-,30r700O", "900O", &[(5, 90, 0)], ok(false)).unwrap().same);
    }

    #[test]
    fn a_view_on_the_clock_is_asked_every_time_and_keeps_its_record() {
        let first = compare(None, "30r700O", "812O", &[(5, 90, 0)], ok(true)).unwrap();
        assert!(first.clock);
        let again = compare(Some(&first.fingerprint), "30r700O", "812O", &[(5, 90, 0)], ok(true)).unwrap();
        assert_eq!(again, Compared { fingerprint: first.fingerprint, same: true, clock: true });
    }

    #[test]
    fn a_record_from_before_rules_counted_is_sql_md5_of_both_texts() {
        // SELECT md5('10v-,20m-,30r700O' || '812O');
        let old = "9bd07486945c14618de146cf971f61bb";
        let now = compare(Some(old), "10v-,20m-,30r700O", "812O", &[(5, 90, 0)], ok(false)).unwrap();
        assert!(now.same);
        assert_ne!(now.fingerprint, old, "the next refresh records rules too");
        // SELECT md5('-');
        assert!(compare(Some("336d5ebc5436534e61d16e63ddfca327"), "", "-", &[], ok(false)).unwrap().same);
        assert!(!compare(Some(old), "10v-,20m-,30r701O", "812O", &[(5, 90, 0)], ok(false)).unwrap().same);
    }

    #[test]
    fn the_clock_is_found_as_an_expression_or_a_call_of_a_clock_function() {
        let clock = [1299, 2649];
        let call = |oid: u32| format!("({{QUERY :commandType 1 ({{FUNCEXPR :funcid {oid} :funcresulttype 1184}})}})");
        assert!(mentions_clock(call(1299).as_bytes(), &clock));
        assert!(mentions_clock(call(2649).as_bytes(), &clock));
        assert!(!mentions_clock(call(12990).as_bytes(), &clock), "a longer number is another function");
        assert!(!mentions_clock(call(129).as_bytes(), &clock));
        assert!(mentions_clock(b"({QUERY :targetList ({TARGETENTRY :expr {SQLVALUEFUNCTION :op 0}})})", &clock));
        assert!(!mentions_clock(b"({QUERY :targetList ({TARGETENTRY :expr {VAR :varno 1}})})", &clock));
        assert!(!mentions_clock(b":funcid ", &clock));
        assert!(!mentions_clock(b"", &clock));
    }
}
