//! Who may register a policy: the owner of the table (a member of its owning
//! role) or a superuser.

use crate::errors::bad_input;
use crate::errors::Found;
use crate::regclass::RegClass;
use pgrx::prelude::*;

/// Returns the table's name as `regclass` prints it, or raises an ERROR with
/// a HINT when the argument is NULL, the table is gone, or the caller does
/// not own it.
pub fn require_owner(table: Option<RegClass>, argument: &str) -> (pg_sys::Oid, String) {
    let Some(RegClass(oid)) = table else {
        bad_input(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{argument} must not be NULL"),
            format!("Pass the table, e.g. {argument} => 'public.nav_history'."),
        );
    };
    let row = Spi::connect(|client| {
        let types = [crate::statements::param(pgrx::pg_sys::BuiltinOid::OIDOID)];
        crate::statements::select(client, OWNER_SQL, &types, &[oid.into()], |rows| {
            if rows.is_empty() {
                return Ok((None, None));
            }
            let row = rows.first();
            Ok((row.get::<String>(1).map_err(|e| e.to_string())?, row.get::<bool>(2).map_err(|e| e.to_string())?))
        })
    });
    match row {
        Ok((Some(name), Some(true))) => (oid, name),
        Ok((Some(name), _)) => bad_input(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {name}"),
            "Run this as the table's owner (or a member of the owning role), or as a superuser.",
        ),
        _ => bad_input(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("table with OID {} does not exist", oid.to_u32()),
            "The table was dropped, or the OID is wrong: check the name in \\dt.",
        ),
    }
}

const OWNER_SQL: &str =
    "SELECT c.oid::regclass::text, pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = $1";

/// For what serves the whole database (the index-health jobs): its owner
/// (a member of the owning role) or a superuser.
pub fn require_database_owner(what: &str) {
    let owner = Spi::get_one::<bool>(
        "SELECT pg_has_role(current_user, d.datdba, 'USAGE') FROM pg_database d WHERE d.datname = current_database()",
    )
    .found();
    if owner != Some(true) {
        bad_input(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of the database to change the {what} job"),
            "Run this as the database's owner or a superuser.",
        );
    }
}

/// SQL for "the current role may manage the relation whose OID is `oid`":
/// a member of its owner's role (superusers are), or, for a relation that
/// no longer exists, of the database owner's. Runs scoped by it see only the
/// jobs their role may manage. The same rule as SQL's `upkeep.may_manage()`,
/// which the trigger on pg_upkeep's tables applies; spelled out here so that
/// a new library keeps working on the previous version's SQL objects until
/// ALTER EXTENSION pg_upkeep UPDATE.
pub fn may_manage_sql(oid: &str) -> String {
    format!(
        "coalesce((SELECT pg_catalog.pg_has_role(o.relowner, 'USAGE') FROM pg_catalog.pg_class o \
                    WHERE o.oid OPERATOR(pg_catalog.=) {oid}), {MAY_MANAGE_DATABASE_SQL})"
    )
}

/// SQL for "the current role may manage the database's own jobs": a member
/// of the database owner's role (as SQL's `upkeep.may_manage_database()`).
pub const MAY_MANAGE_DATABASE_SQL: &str = "(SELECT pg_catalog.pg_has_role(d.datdba, 'USAGE') \
     FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())";

/// Whether the current role is a superuser: the WHEN of the permission
/// triggers (`upkeep_check_manager`), so that a superuser's writes (the
/// workers', most DBAs') skip the trigger's plpgsql, which cost 6 ms of a
/// views decision at 500 views. Runs no SQL and so needs no search_path.
#[pg_extern(stable, parallel_safe)]
fn caller_is_superuser() -> bool {
    // SAFETY: reads the current user's role flag from the catalog cache.
    unsafe { pg_sys::superuser() }
}
