//! Change tracking for views refreshed only when changed. Statistics
//! counters cannot decide that: a backend reports its counts seconds (or,
//! inside a long procedure, hours) after it commits, and they reset. So a
//! statement-level trigger on every table such a view reads records, in
//! the writer's own transaction, that the table changed: one row per table
//! and backend in `upkeep.changes` holding the backend's last writing
//! transaction. A refresh remembers the snapshot it read; a later change is
//! a row whose transaction that snapshot does not see. Refreshes of
//! materialized views (which have no triggers) are recorded by the event
//! trigger `upkeep_track_refreshes`.

use crate::statements::param;
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

pub use upkeep_core::matviews::tracking::{track_sql, untrack_sql, TRIGGER};

thread_local! {
    /// Tables this transaction has recorded already: one row write per
    /// table and transaction, however many statements it runs.
    static NOTED: RefCell<HashSet<pg_sys::Oid>> = RefCell::new(HashSet::new());
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

/// Sets the backend's row (relation, backend) to the current transaction
/// and command.
/// If another transaction holds that row (a prepared transaction of this
/// backend), a one-off row is added instead, so a writer never waits.
const NOTE_SQL: &str = "\
WITH mine AS (SELECT ctid FROM upkeep.changes WHERE relid = $1 AND slot = $2 FOR UPDATE SKIP LOCKED), \
     done AS (UPDATE upkeep.changes c SET xid = pg_current_xact_id(), cid = $3 FROM mine WHERE c.ctid = mine.ctid RETURNING 1) \
INSERT INTO upkeep.changes (relid, slot, xid, cid) \
SELECT $1, CASE WHEN EXISTS (SELECT 1 FROM upkeep.changes WHERE relid = $1 AND slot = $2) \
                THEN -nextval('upkeep.change_slots')::int4 ELSE $2 END, pg_current_xact_id(), $3 \
 WHERE NOT EXISTS (SELECT 1 FROM done)";

/// This backend's number, unique among running backends.
fn backend_slot() -> i32 {
    // SAFETY: set when the backend starts.
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
    let slot = unsafe { pg_sys::MyBackendId };
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    let slot = unsafe { pg_sys::MyProcNumber };
    slot
}

/// Forgets what this transaction recorded when it ends; a subtransaction
/// rolled back takes its rows with it, so then all is forgotten (a table
/// is recorded again, which costs one more write).
#[pg_guard]
unsafe extern "C-unwind" fn transaction_ended(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        NOTED.with(|n| n.borrow_mut().clear());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subtransaction_ended(
    event: pg_sys::SubXactEvent::Type,
    _sub: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        NOTED.with(|n| n.borrow_mut().clear());
    }
}

/// The current command of this transaction. A refresh remembers it, so
/// that changes its own transaction makes after it are told apart.
#[pg_extern(stable, parallel_safe)]
fn command_id() -> i64 {
    // SAFETY: reads the transaction's command counter.
    i64::from(unsafe { pg_sys::GetCurrentCommandId(false) })
}

/// Forgets which tables this transaction recorded, so that a change after
/// a refresh in the same transaction is recorded again, with its command.
pub fn forget_noted() {
    NOTED.with(|n| n.borrow_mut().clear());
}

/// Records that `relid` changed in the current transaction.
fn note(relid: pg_sys::Oid) {
    if NOTED.with(|n| n.borrow().contains(&relid)) {
        return;
    }
    if !CALLBACKS.get() {
        // SAFETY: registers backend-lifetime callbacks once.
        unsafe {
            pg_sys::RegisterXactCallback(Some(transaction_ended), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(subtransaction_ended), std::ptr::null_mut());
        }
        CALLBACKS.set(true);
    }
    Spi::connect_mut(|client| {
        crate::statements::update(
            client,
            NOTE_SQL,
            &[param(BuiltinOid::OIDOID), param(BuiltinOid::INT4OID), param(BuiltinOid::INT8OID)],
            &[relid.into(), backend_slot().into(), command_id().into()],
        )
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not record a change of table {}: {e}", relid.to_u32()));
    NOTED.with(|n| n.borrow_mut().insert(relid));
}

/// The trigger function: statement level, after INSERT, UPDATE, DELETE
/// and TRUNCATE. Declared in finalize.sql (SECURITY DEFINER, pinned
/// search_path), because every writer of a tracked table runs it.
#[pg_trigger(sql = false)]
fn track_changes<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    note(trigger.relid()?);
    Ok(None)
}

/// Deletes change rows nobody needs: of relations no managed view reads
/// (each relation checked once, from it upwards: walking every view's
/// reads took a quarter of a decision at 500 views), and one-off rows
/// every view reading the relation has seen. Rows a writer
/// holds are left alone (SKIP LOCKED), so this never waits. Only roles that
/// may delete change records do it (the workers, superusers): no other role
/// may remove a change that another role's view has not seen yet.
pub fn prune() {
    Spi::connect_mut(|client| {
        let allowed = crate::statements::select(client, PRUNE_ALLOWED_SQL, &[], &[], |rows| {
            rows.first().get::<bool>(1).map_err(|e| e.to_string())
        })?;
        if allowed == Some(true) {
            crate::statements::update(client, PRUNE_SQL, &[], &[])?;
        }
        Ok::<_, String>(())
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not prune upkeep.changes: {e}"));
}

/// Also false with the SQL objects of 0.3.0 (after a package upgrade,
/// before ALTER EXTENSION UPDATE): the rows then wait for the update.
const PRUNE_ALLOWED_SQL: &str = "SELECT has_table_privilege('upkeep.changes', 'DELETE') \
                                    AND to_regprocedure('upkeep.read_by_managed_view(oid)') IS NOT NULL";
const PRUNE_SQL: &str = "\
DELETE FROM upkeep.changes c USING ( \
  SELECT ctid FROM upkeep.changes c \
   WHERE (c.relid IN (SELECT d.relid FROM (SELECT DISTINCT relid FROM upkeep.changes) d \
                       WHERE NOT upkeep.read_by_managed_view(d.relid)) \
      OR (c.slot < 0 AND NOT EXISTS (SELECT 1 FROM upkeep.matview_state s \
                                     WHERE c.relid = ANY (s.bases) \
                                       AND NOT upkeep.seen(c, s)))) \
     FOR UPDATE SKIP LOCKED) gone \
 WHERE c.ctid = gone.ctid";
