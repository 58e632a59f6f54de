//! Which version is installed where: the SQL objects in this database
//! (`ALTER EXTENSION pg_upkeep UPDATE` moves them on, through the scripts
//! `sql/pg_upkeep--<old>--<new>.sql`) and the library the server loaded.

use crate::errors::Found;
use pgrx::prelude::*;

/// The version of pg_upkeep's SQL objects in this database and of the
/// library loaded; they differ after a package upgrade until
/// `ALTER EXTENSION pg_upkeep UPDATE`.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn version() -> TableIterator<'static, (name!(installed, String), name!(library, String), name!(up_to_date, bool))> {
    crate::errors::guarded("version", || {
        let installed = Spi::get_one::<String>("SELECT extversion::text FROM pg_extension WHERE extname = 'pg_upkeep'")
            .found()
            .unwrap_or_default();
        let library = env!("CARGO_PKG_VERSION").to_string();
        let up_to_date = installed == library;
        TableIterator::once((installed, library, up_to_date))
    })
}
