//! Top-level statements: the CONCURRENTLY forms PostgreSQL refuses inside a
//! transaction block or a function (DETACH PARTITION CONCURRENTLY, later
//! REINDEX CONCURRENTLY). A `pg_upkeep worker` runs them itself, the way
//! the server runs a statement sent by a client: parsed, handed to
//! ProcessUtility as a top-level command, in a transaction the statement
//! may commit and restart on its own. No connection is opened, so nothing
//! in pg_hba.conf is needed. SQL callers (psql, pg_cron) are always inside
//! a transaction, so they use the plain forms under `upkeep.lock_timeout`.

/// Whether this server has the top-level statements pg_upkeep uses.
pub const AVAILABLE: bool = cfg!(not(feature = "pg13"));

#[cfg(not(feature = "pg13"))]
mod imp {
    use pgrx::prelude::*;

    /// Runs `sql` (one utility statement) at top level as `role`, with no
    /// transaction open: starts one, lets the statement commit and start
    /// others as it likes, and commits what is left. An error aborts the
    /// transaction and comes back as the message, the way `catch` would.
    pub fn run(sql: &str, role: pg_sys::Oid) -> Result<(), Box<pgrx::pg_sys::panic::CaughtError>> {
        let text = std::ffi::CString::new(sql).expect("statements carry no NUL");
        // SAFETY: the sequence exec_simple_query follows for a utility
        // statement. The parse tree lives in a context of its own, because
        // the statement ends the transaction it started in; that context
        // also serves as PortalContext, which such statements keep their
        // state in across their transactions (as autovacuum does).
        unsafe {
            let caller = pg_sys::CurrentMemoryContext;
            let mut saved_user = pg_sys::InvalidOid;
            let mut saved_context = 0;
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            let own = pg_sys::AllocSetContextCreateExtended(
                pg_sys::TopMemoryContext,
                c"pg_upkeep top-level statement".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            );
            let text_ptr = text.as_ptr();
            let portal_context = pg_sys::PortalContext;
            pg_sys::PortalContext = own;
            let result = PgTryBuilder::new(move || {
                pg_sys::StartTransactionCommand();
                pg_sys::MemoryContextSwitchTo(own);
                let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
                pg_sys::SetUserIdAndSecContext(role, saved_context | restricted);
                let parsed = pg_sys::raw_parser(text_ptr, pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
                assert!(!parsed.is_null() && (*parsed).length == 1, "one statement at a time");
                let raw = (*(*parsed).elements).ptr_value as *mut pg_sys::RawStmt;
                let planned = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannedStmt>()) as *mut pg_sys::PlannedStmt;
                (*planned).type_ = pg_sys::NodeTag::T_PlannedStmt;
                (*planned).commandType = pg_sys::CmdType::CMD_UTILITY;
                (*planned).canSetTag = true;
                (*planned).utilityStmt = (*raw).stmt;
                (*planned).stmt_location = (*raw).stmt_location;
                (*planned).stmt_len = (*raw).stmt_len;
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
                pg_sys::ProcessUtility(
                    planned,
                    text_ptr,
                    false,
                    pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    pg_sys::None_Receiver,
                    std::ptr::null_mut(),
                );
                // Some commands pop the snapshot themselves (DETACH
                // CONCURRENTLY does, before it commits).
                if pg_sys::ActiveSnapshotSet() {
                    pg_sys::PopActiveSnapshot();
                }
                pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
                pg_sys::CommitTransactionCommand();
                Ok(())
            })
            .catch_others(|e| {
                pg_sys::AbortCurrentTransaction();
                Err(Box::new(e))
            })
            .execute();
            // An abort restores the user of the transaction's start, which
            // for a statement that restarted its transaction is the owner.
            pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
            pg_sys::MemoryContextSwitchTo(caller);
            pg_sys::PortalContext = portal_context;
            pg_sys::MemoryContextDelete(own);
            result
        }
    }
}

#[cfg(feature = "pg13")]
mod imp {
    use pgrx::prelude::*;

    pub fn run(_sql: &str, _role: pg_sys::Oid) -> Result<(), Box<pgrx::pg_sys::panic::CaughtError>> {
        unreachable!("plans use top-level statements only where toplevel::AVAILABLE")
    }
}

pub use imp::run;
