//! Which tables Citus distributes or replicates, from its catalog
//! `pg_dist_partition` (on a server without Citus: none). pg_upkeep
//! refuses them (`upkeep_core::citus`).

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::BTreeSet;

/// The given tables that Citus distributes or replicates, by OID.
pub fn distributed(client: &SpiClient<'_>, tables: &[pg_sys::Oid]) -> Result<BTreeSet<u32>, String> {
    let err = |e: pgrx::spi::SpiError| e.to_string();
    let found =
        client.select("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL", None, &[]).map_err(err)?;
    if !found.first().get::<bool>(1).map_err(err)?.unwrap_or(false) || tables.is_empty() {
        return Ok(BTreeSet::new());
    }
    let rows = client
        .select(
            "SELECT d.logicalrelid::oid::int8 FROM pg_catalog.pg_dist_partition d WHERE d.logicalrelid::oid = ANY ($1)",
            None,
            &[tables.to_vec().into()],
        )
        .map_err(err)?;
    let mut out = BTreeSet::new();
    for row in rows {
        out.insert(row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32);
    }
    Ok(out)
}
