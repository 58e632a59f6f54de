//! What managed views read, walked through the catalogs by the library
//! itself: a view's rules and the relations and functions they depend on,
//! on through plain views (not into other materialized views, whose stored
//! rows are what is read), and the partitions and inheritance children of
//! every relation met. As one SQL statement, the walk and the lookups
//! around it took three quarters of a refresh decision at 500 views:
//! thousands of catalog lookups through the executor, planned anew in
//! each new session. Here each lookup is an index probe or a catalog cache
//! hit, and each relation and rule is looked up once per walk, however
//! many views read it.
//!
//! The scans (rules, dependencies, children, tracking triggers) read in
//! a snapshot of the caller's transaction: in REPEATABLE READ the one a
//! refresh records and reads, so tracking committed after it never passes
//! for seen; in READ COMMITTED one taken after the recorded snapshot and
//! before the refresh's own. Kinds and names come from the catalog cache.

use crate::catalog::{Row, Snapshot, INHERITS, INHERITS_BY_PARENT, INHERITS_INHPARENT, INHERITS_INHRELID};
use crate::sql::QualifiedName;
use pgrx::prelude::*;
use std::collections::{BTreeSet, HashMap};
use upkeep_core::matviews::reads::{mentions_clock, Read};

// Catalogs, indexes and columns the walk reads; the same numbers in every
// supported version.
const DEPEND: u32 = 2608;
const DEPEND_BY_DEPENDER: u32 = 2673;
const DEPEND_CLASSID: i16 = 1;
const DEPEND_OBJID: i16 = 2;
const DEPEND_REFCLASSID: i32 = 4;
const DEPEND_REFOBJID: i32 = 5;
const REWRITE: u32 = 2618;
const REWRITE_BY_RELATION: u32 = 2693;
const REWRITE_OID: i32 = 1;
const REWRITE_EV_CLASS: i16 = 3;
const REWRITE_EV_ACTION: i32 = 8;
const SUBSCRIPTION_REL: u32 = 6102;
const SUBSCRIPTION_REL_BY_RELATION: u32 = 6117;
const SUBSCRIPTION_REL_SRRELID: i16 = 2;

/// The trigger that records a table's changes.
const TRACKING_TRIGGER: &str = upkeep_core::matviews::tracking::TRIGGER;

/// One relation met, as its catalog row and tracking describe it.
struct Relation {
    kind: u8,
    table: QualifiedName,
    /// The tracking trigger: its row's xmin and tgenabled.
    tracking: Option<(u32, u8)>,
    replicated: bool,
    children: Vec<u32>,
}

/// What a relation's rules (a view's query) read and call.
#[derive(Default)]
struct Rules {
    relations: Vec<u32>,
    /// Functions not marked IMMUTABLE, as `regprocedure` text.
    calls: Vec<String>,
    /// Each rule's OID and row version (xmin, and the command that wrote
    /// it, for versions of one transaction): another version is another
    /// query.
    versions: Vec<(u32, u32, u32)>,
}

/// What one view reads.
pub struct ViewReads {
    /// Every relation, the view itself not included: distinct, in order.
    pub relations: Vec<u32>,
    /// Functions its query or a plain view's calls that may read tables
    /// whose changes cannot be seen, as `regprocedure` text.
    pub calls: Vec<String>,
    /// The view and the plain views read through: their queries are
    /// what it reads.
    pub queries: Vec<u32>,
    /// Their rules' OIDs and row versions.
    pub rules: Vec<(u32, u32, u32)>,
}

/// One walk: what it has looked up so far, for the views after.
pub struct Walk {
    snapshot: Snapshot,
    relations: HashMap<u32, Option<Relation>>,
    rules: HashMap<u32, Rules>,
    clocks: HashMap<u32, bool>,
    /// Whether any table is written by a subscription: asked once, at
    /// the first relation (most databases have none to look up).
    any_subscribed: Option<bool>,
}

impl Walk {
    /// A walk in the snapshot the caller's next statement would read.
    pub fn in_current_snapshot() -> Walk {
        Walk {
            snapshot: Snapshot::current(),
            relations: HashMap::new(),
            rules: HashMap::new(),
            clocks: HashMap::new(),
            any_subscribed: None,
        }
    }

    /// What the view reads.
    pub fn view(&mut self, view: u32) -> ViewReads {
        let mut met = BTreeSet::from([view]);
        let mut queue = vec![view];
        let mut calls = BTreeSet::new();
        let mut queries = Vec::new();
        let mut rules = Vec::new();
        while let Some(relid) = queue.pop() {
            // The view itself is the caller's to know (a materialized view
            // has no children); of the rest, plain views are read through.
            let mut next = Vec::new();
            let through = relid == view
                || match self.relation(relid) {
                    None => continue,
                    Some(r) => {
                        next.clone_from(&r.children);
                        r.kind == b'v'
                    }
                };
            if through {
                let r = self.rules_of(relid);
                next.extend(r.relations.iter().copied());
                calls.extend(r.calls.iter().cloned());
                rules.extend(r.versions.iter().copied());
                queries.push(relid);
            }
            for r in next {
                if met.insert(r) {
                    queue.push(r);
                }
            }
        }
        met.remove(&view);
        queries.sort_unstable();
        ViewReads { relations: met.into_iter().collect(), calls: calls.into_iter().collect(), queries, rules }
    }

    /// The view and plain views read whose queries use the clock: call
    /// one of `clock_functions` (`now()`, `random()` and the like, by OID)
    /// or have a clock expression.
    pub fn clock(&mut self, reads: &ViewReads, clock_functions: &[u32]) -> Vec<u32> {
        let mut clock = Vec::new();
        for &relid in &reads.queries {
            if !self.clocks.contains_key(&relid) {
                let mut uses = false;
                self.snapshot.rows(REWRITE, Some(REWRITE_BY_RELATION), &[(REWRITE_EV_CLASS, relid.into())], |row| {
                    uses |= uses_clock(row, clock_functions);
                    !uses
                });
                self.clocks.insert(relid, uses);
            }
            if self.clocks[&relid] {
                clock.push(relid);
            }
        }
        clock
    }

    /// The relations a view reads as the plan reads them, given its owner
    /// (whether it may create the tracking trigger).
    pub fn facts(&mut self, reads: &ViewReads, owner: pg_sys::Oid) -> Vec<Read> {
        reads
            .relations
            .iter()
            .filter_map(|&relid| {
                let r = self.relation(relid)?;
                let may_track =
                    matches!(r.kind, b'r' | b'p') && r.tracking.is_none() && may_create_trigger(relid, owner);
                Some(Read {
                    relid,
                    kind: r.kind,
                    table: r.table.clone(),
                    tracking: r.tracking,
                    replicated: r.replicated,
                    may_track,
                })
            })
            .collect()
    }

    /// The relation's name, if it exists.
    pub fn name(&mut self, relid: u32) -> Option<QualifiedName> {
        self.relation(relid).map(|r| r.table.clone())
    }

    fn relation(&mut self, relid: u32) -> Option<&Relation> {
        if self.any_subscribed.is_none() {
            self.any_subscribed = Some(self.snapshot.rows(SUBSCRIPTION_REL, None, &[], |_| false));
        }
        if !self.relations.contains_key(&relid) {
            let found = self.look_up(relid);
            self.relations.insert(relid, found);
        }
        self.relations[&relid].as_ref()
    }

    fn look_up(&self, relid: u32) -> Option<Relation> {
        // SAFETY: a catalog cache lookup; the row is copied out before
        // it is released.
        let (kind, name, schema, has_triggers, has_children) = unsafe {
            let tuple =
                pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Oid::from(relid).into());
            if tuple.is_null() {
                return None;
            }
            let c = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
            let name = std::ffi::CStr::from_ptr(c.relname.data.as_ptr()).to_string_lossy().into_owned();
            let row = (c.relkind as u8, name, c.relnamespace, c.relhastriggers, c.relhassubclass);
            pg_sys::ReleaseSysCache(tuple);
            row
        };
        let schema = crate::catalog::namespace_name(schema)?;
        let relation = pg_sys::Oid::from(relid);
        let mut tracking = None;
        if has_triggers {
            self.snapshot.rows(
                pg_sys::TriggerRelationId.to_u32(),
                Some(pg_sys::TriggerRelidNameIndexId),
                &[(pg_sys::Anum_pg_trigger_tgrelid as i16, relation)],
                |row| {
                    // SAFETY: a pg_trigger row of the scan.
                    let tg = unsafe { &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_trigger>(row.tuple) };
                    // SAFETY: NameData is NUL-terminated.
                    let name = unsafe { std::ffi::CStr::from_ptr(tg.tgname.data.as_ptr()) };
                    if name.to_bytes() == TRACKING_TRIGGER.as_bytes() {
                        tracking = Some((row.xmin(), tg.tgenabled as u8));
                        return false;
                    }
                    true
                },
            );
        }
        let replicated = self.any_subscribed == Some(true)
            && self.snapshot.rows(
                SUBSCRIPTION_REL,
                Some(SUBSCRIPTION_REL_BY_RELATION),
                &[(SUBSCRIPTION_REL_SRRELID, relation)],
                |_| false,
            );
        let mut children = Vec::new();
        if has_children {
            self.snapshot.rows(INHERITS, Some(INHERITS_BY_PARENT), &[(INHERITS_INHPARENT, relation)], |row| {
                children.extend(row.oid(INHERITS_INHRELID).map(pg_sys::Oid::to_u32));
                true
            });
        }
        Some(Relation { kind, table: QualifiedName::new(schema, name), tracking, replicated, children })
    }

    fn rules_of(&mut self, relid: u32) -> &Rules {
        if !self.rules.contains_key(&relid) {
            let rules = self.read_rules(relid);
            self.rules.insert(relid, rules);
        }
        &self.rules[&relid]
    }

    /// What the relation's rules depend on, and their versions.
    fn read_rules(&self, relid: u32) -> Rules {
        let mut rules = Rules::default();
        self.snapshot.rows(REWRITE, Some(REWRITE_BY_RELATION), &[(REWRITE_EV_CLASS, relid.into())], |row| {
            rules.versions.extend(row.oid(REWRITE_OID).map(|o| (o.to_u32(), row.xmin(), row.cmin())));
            true
        });
        let mut calls = BTreeSet::new();
        for rule in rules.versions.iter().map(|(o, ..)| pg_sys::Oid::from(*o)) {
            self.snapshot.rows(
                DEPEND,
                Some(DEPEND_BY_DEPENDER),
                &[(DEPEND_CLASSID, REWRITE.into()), (DEPEND_OBJID, rule)],
                |row| {
                    let (Some(class), Some(object)) = (row.oid(DEPEND_REFCLASSID), row.oid(DEPEND_REFOBJID)) else {
                        return true;
                    };
                    if class == pg_sys::RelationRelationId && object.to_u32() != relid {
                        rules.relations.push(object.to_u32());
                    } else if class == pg_sys::ProcedureRelationId {
                        calls.extend(not_immutable(object));
                    }
                    true
                },
            );
        }
        rules.relations.sort_unstable();
        rules.relations.dedup();
        rules.calls = calls.into_iter().collect();
        rules
    }
}

/// Whether the role may create triggers on the relation; false for a
/// relation dropped since the walk read it (no lock is held on it), as
/// SQL's `has_table_privilege` answers, instead of an ERROR.
fn may_create_trigger(relid: u32, role: pg_sys::Oid) -> bool {
    let mut missing = false;
    // SAFETY: a privilege check by OID that reports a missing relation.
    let result = unsafe {
        pg_sys::pg_class_aclcheck_ext(relid.into(), role, pg_sys::ACL_TRIGGER as pg_sys::AclMode, &mut missing)
    };
    !missing && result == pg_sys::AclResult::ACLCHECK_OK
}

/// Whether the rule row's query uses the clock.
fn uses_clock(row: &Row, clock_functions: &[u32]) -> bool {
    let Some(datum) = row.datum(REWRITE_EV_ACTION) else { return false };
    // SAFETY: ev_action is a text column of the row; detoasted into a
    // copy when compressed.
    unsafe {
        let stored = datum.cast_mut_ptr::<pg_sys::varlena>();
        let text = pg_sys::pg_detoast_datum_packed(stored);
        let uses = mentions_clock(pgrx::varlena::varlena_to_byte_slice(text), clock_functions);
        if text != stored {
            pg_sys::pfree(text.cast());
        }
        uses
    }
}

/// The function as `regprocedure` text, unless it is IMMUTABLE (or gone).
fn not_immutable(function: pg_sys::Oid) -> Option<String> {
    // SAFETY: a catalog cache lookup; the flag is copied out first.
    let volatility = unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::PROCOID as i32, function.into());
        if tuple.is_null() {
            return None;
        }
        let v = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple)).provolatile as u8;
        pg_sys::ReleaseSysCache(tuple);
        v
    };
    if volatility == pg_sys::PROVOLATILE_IMMUTABLE {
        return None;
    }
    // SAFETY: regprocedure's text (a palloc'd C string) of a function
    // just found.
    unsafe {
        let text = pg_sys::format_procedure(function);
        let out = std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned();
        pg_sys::pfree(text.cast());
        Some(out)
    }
}
