//! Which tables Citus distributes or replicates, from its catalog
//! `pg_dist_partition` (on a server without Citus: none). pg_upkeep
//! refuses them (`upkeep_core::citus`).

use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::BTreeSet;

const CATALOG_SQL: &str = "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL";
const DISTRIBUTED_SQL: &str =
    "SELECT d.logicalrelid::oid::int8 FROM pg_catalog.pg_dist_partition d WHERE d.logicalrelid::oid = ANY ($1)";

/// The given tables that Citus distributes or replicates, by OID. Both
/// reads run through plans kept for the session (the views call this on
/// every read); the second only where Citus' catalog exists.
pub fn distributed(client: &SpiClient<'_>, tables: &[pg_sys::Oid]) -> Result<BTreeSet<u32>, String> {
    let err = |e: pgrx::spi::SpiError| e.to_string();
    let citus = statements::select(client, CATALOG_SQL, &[], &[], |rows| rows.first().get::<bool>(1).map_err(err))?;
    if citus != Some(true) || tables.is_empty() {
        return Ok(BTreeSet::new());
    }
    let types = [param(BuiltinOid::OIDARRAYOID)];
    statements::select(client, DISTRIBUTED_SQL, &types, &[tables.to_vec().into()], |rows| {
        rows.map(|row| row.get::<i64>(1).map(|o| o.unwrap_or_default() as u32).map_err(err)).collect()
    })
}
