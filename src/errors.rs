//! ERRORs for bad input: a message that names the object and a HINT that
//! says what to do. Raising aborts the statement, so nothing changes.

use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;

pub fn bad_input(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "pg_upkeep").set_hint(hint.into()).report(PgLogLevel::ERROR);
    unreachable!()
}

pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> ! {
    bad_input(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, hint)
}

/// An argument that has a default but no meaning as NULL (a flag, a
/// size): its value, or an ERROR naming it and the function. Such
/// arguments are taken as Option so that a NULL reaches this check
/// instead of making the function STRICT (no row, no error).
pub fn given<T>(value: Option<T>, argument: &str, function: &str, hint: &str) -> T {
    value.unwrap_or_else(|| invalid(format!("{argument} of upkeep.{function}() is NULL"), hint))
}

/// A query's single value: `None` when it finds no row (or NULL); any
/// other failure raises an ERROR instead of passing for "nothing there".
pub trait Found<T> {
    fn found(self) -> Option<T>;
}

impl<T> Found<T> for Result<Option<T>, pgrx::spi::SpiError> {
    fn found(self) -> Option<T> {
        match self {
            Ok(value) => value,
            Err(pgrx::spi::SpiError::InvalidPosition) => None,
            Err(e) => error!("pg_upkeep could not read what it needs: {e}"),
        }
    }
}

/// Whether an interval is longer than nothing (as PostgreSQL compares
/// intervals: '1 month' against '30 days' and so on).
pub fn is_positive(interval: pgrx::datum::Interval) -> bool {
    Spi::get_one_with_args::<bool>("SELECT $1 > interval '0'", &[interval.into()])
        .unwrap_or_else(|e| error!("pg_upkeep could not compare an interval: {e}"))
        .unwrap_or(false)
}

/// The HINT for a NULL `dry_run`.
pub const DRY_RUN_HINT: &str = "Pass true to see the actions and their SQL without doing them, or false (the default).";

/// Runs the body of an SQL function so that every ERROR leaving it reads
/// like one of ours: a message, a HINT, and no Rust internals. Errors we
/// raise keep their HINT; one PostgreSQL raised inside (a name that does
/// not parse, `permission denied for schema` while resolving a name) keeps
/// its SQLSTATE, message and DETAIL and gains a HINT for its class; a Rust
/// panic (a bug of ours) becomes a plain ERROR whose text goes to the
/// server log only. Either way the statement is aborted, so nothing changes.
pub fn guarded<R>(function: &'static str, body: impl FnOnce() -> R) -> R {
    // AssertUnwindSafe: an error aborts the statement, so nothing the body
    // touched is seen half-done.
    let body = std::panic::AssertUnwindSafe(body);
    PgTryBuilder::new(body).catch_others(move |e| reraise(function, e)).execute()
}

fn reraise(function: &str, e: CaughtError) -> ! {
    let report = match e {
        CaughtError::RustPanic { ereport, .. } => {
            log!("pg_upkeep: internal error in upkeep.{function}(): {}", ereport.message());
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("upkeep.{function}() failed on an internal error"),
                "pg_upkeep",
            )
            .set_hint("Nothing was changed. This is a bug in pg_upkeep: the server log has the details for a report.")
        }
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            let code = r.sql_error_code();
            let hint = r.hint().filter(|h| !h.is_empty()).map_or_else(|| hint_for(code).to_string(), str::to_string);
            let out = ErrorReport::new(code, r.message().to_string(), "pg_upkeep").set_hint(hint);
            match r.detail().filter(|d| !d.trim().is_empty()) {
                Some(detail) => out.set_detail(detail.to_string()),
                None => out,
            }
        }
    };
    report.report(PgLogLevel::ERROR);
    unreachable!()
}

/// The HINT for an error PostgreSQL raised without one, by its class.
fn hint_for(code: PgSqlErrorCode) -> &'static str {
    use PgSqlErrorCode::*;
    match code {
        ERRCODE_INSUFFICIENT_PRIVILEGE => {
            "Your role lacks a privilege this needs: run it as the table's owner, or ask the object's owner to GRANT it."
        }
        ERRCODE_INVALID_NAME
        | ERRCODE_INVALID_PARAMETER_VALUE
        | ERRCODE_SYNTAX_ERROR
        | ERRCODE_UNDEFINED_TABLE
        | ERRCODE_UNDEFINED_OBJECT
        | ERRCODE_INVALID_SCHEMA_NAME
        | ERRCODE_UNDEFINED_COLUMN => {
            "Write names as SQL does (schema.table, with double quotes around capitals, spaces or symbols), and check that they exist."
        }
        ERRCODE_LOCK_NOT_AVAILABLE => "Another session holds a lock this needs: try again later, or raise upkeep.lock_timeout.",
        ERRCODE_QUERY_CANCELED => "The statement was canceled (statement_timeout or a cancel request); nothing was changed.",
        ERRCODE_READ_ONLY_SQL_TRANSACTION => "Run it on the primary: a standby or a read-only transaction changes nothing.",
        _ => "Nothing was changed. The message says what PostgreSQL refused; upkeep.job_runs and the server log say more.",
    }
}
