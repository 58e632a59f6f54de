//! Catalog rows read by the library itself, without SQL: index probes and
//! the catalog cache, for reads that run on every call and whose planning
//! cost more than the reading (what a view reads; a parent's partitions).

use pgrx::prelude::*;

// Catalogs, indexes and columns read here and by their callers; the same
// numbers in every supported version.
pub const INHERITS: u32 = 2611;
pub const INHERITS_BY_PARENT: u32 = 2187;
pub const INHERITS_INHRELID: i32 = 1;
pub const INHERITS_INHPARENT: i16 = 2;
/// pg_inherits.inhdetachpending, from PostgreSQL 14.
pub const INHERITS_DETACH_PENDING: i32 = 4;
const CONSTRAINT: u32 = 2606;
const CONSTRAINT_BY_RELATION: u32 = 2665;
const CONSTRAINT_CONNAME: i32 = 2;

/// A snapshot of the caller's transaction, registered while it lives: the
/// one the caller's next statement would read.
pub struct Snapshot(pg_sys::Snapshot);

impl Snapshot {
    pub fn current() -> Snapshot {
        // SAFETY: registered here, unregistered on drop (an error ends the
        // transaction, which releases it too).
        Snapshot(unsafe { pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot()) })
    }

    /// Scans a catalog for the rows whose columns equal the OIDs (by the
    /// index, or every row without one), until `each` returns false.
    /// Whether any row was seen.
    pub fn rows(
        &self,
        catalog: u32,
        index: Option<u32>,
        keys: &[(i16, pg_sys::Oid)],
        mut each: impl FnMut(&Row) -> bool,
    ) -> bool {
        let mut any = false;
        // SAFETY: the catalog is opened and closed here, under
        // AccessShareLock; the scan keys live until the scan ends.
        unsafe {
            let rel = pg_sys::table_open(catalog.into(), pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let mut scan_keys: Vec<pg_sys::ScanKeyData> = keys
                .iter()
                .map(|(column, value)| {
                    let mut key = pg_sys::ScanKeyData::default();
                    pg_sys::ScanKeyInit(
                        &mut key,
                        *column,
                        pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                        pg_sys::F_OIDEQ.into(),
                        (*value).into(),
                    );
                    key
                })
                .collect();
            let scan = pg_sys::systable_beginscan(
                rel,
                index.unwrap_or(0).into(),
                index.is_some(),
                self.0,
                scan_keys.len() as i32,
                scan_keys.as_mut_ptr(),
            );
            loop {
                let t = pg_sys::systable_getnext(scan);
                if t.is_null() {
                    break;
                }
                any = true;
                if !each(&Row { tuple: t, desc: (*rel).rd_att }) {
                    break;
                }
            }
            pg_sys::systable_endscan(scan);
            // The lock is kept to the end of the transaction, as a query's
            // is: the next scan of the catalog finds it taken.
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        any
    }
}

impl Snapshot {
    /// Whether the relation has a constraint of that name.
    pub fn has_constraint(&self, relid: pg_sys::Oid, name: &std::ffi::CStr) -> bool {
        // conrelid moved in PostgreSQL 18 (conenforced came before it).
        // SAFETY: a catalog cache lookup of a column by name.
        let conrelid = unsafe { pg_sys::get_attnum(CONSTRAINT.into(), c"conrelid".as_ptr()) };
        let mut found = false;
        self.rows(CONSTRAINT, Some(CONSTRAINT_BY_RELATION), &[(conrelid, relid)], |row| {
            found = row.name(CONSTRAINT_CONNAME).is_some_and(|n| n == name);
            !found
        });
        found
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // SAFETY: registered in current().
        unsafe { pg_sys::UnregisterSnapshot(self.0) };
    }
}

/// A schema's name, from the catalog cache.
pub fn namespace_name(schema: pg_sys::Oid) -> Option<String> {
    // SAFETY: a catalog cache lookup returning a palloc'd copy.
    unsafe {
        let s = pg_sys::get_namespace_name(schema);
        if s.is_null() {
            return None;
        }
        let out = std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned();
        pg_sys::pfree(s.cast());
        Some(out)
    }
}

/// A catalog row met by a scan, valid while the scan is on it.
pub struct Row {
    pub tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Row {
    /// An oid column.
    pub fn oid(&self, column: i32) -> Option<pg_sys::Oid> {
        self.datum(column).map(|d| pg_sys::Oid::from(d.value() as u32))
    }

    /// A bool column.
    pub fn bool(&self, column: i32) -> Option<bool> {
        self.datum(column).map(|d| d.value() != 0)
    }

    /// A name column.
    pub fn name(&self, column: i32) -> Option<&std::ffi::CStr> {
        // SAFETY: a name column's datum points to NUL-terminated NameData
        // in the row, which outlives &self.
        self.datum(column).map(|d| unsafe { std::ffi::CStr::from_ptr(d.cast_mut_ptr::<std::ffi::c_char>()) })
    }

    /// A column as stored (a pointer into the row for a variable-length one).
    pub fn datum(&self, column: i32) -> Option<pg_sys::Datum> {
        let mut null = false;
        // SAFETY: a column of a row of the catalog the descriptor describes.
        let datum = unsafe { pg_sys::heap_getattr(self.tuple, column, self.desc, &mut null) };
        (!null).then_some(datum)
    }

    /// The row's xmin, as the `xmin` column shows it.
    pub fn xmin(&self) -> u32 {
        self.system_column(pg_sys::MinTransactionIdAttributeNumber)
    }

    /// The command of its transaction that wrote the row, as the `cmin`
    /// column shows it.
    pub fn cmin(&self) -> u32 {
        self.system_column(pg_sys::MinCommandIdAttributeNumber)
    }

    fn system_column(&self, column: i32) -> u32 {
        let mut null = false;
        // SAFETY: a system column of a heap row; the descriptor is not
        // read for it.
        let datum = unsafe { pg_sys::heap_getattr(self.tuple, column, std::ptr::null_mut(), &mut null) };
        datum.value() as u32
    }
}
