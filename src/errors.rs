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
