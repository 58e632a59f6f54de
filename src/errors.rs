//! ERRORs for bad input: a message that names the object and a HINT that
//! says what to do. Raising aborts the statement, so nothing changes.

use pgrx::pg_sys::panic::ErrorReport;
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

/// The HINT for a NULL `dry_run`.
pub const DRY_RUN_HINT: &str = "Pass true to see the actions and their SQL without doing them, or false (the default).";
