//! Sizes on disk, read from the files alone. `pg_relation_size()` and its
//! kin open and lock each relation they measure, one after the other: a
//! view of 24,000 partitions waited behind DDL on any one of them (an
//! ALTER, a DETACH, a VACUUM FULL), and the opens cost three times the
//! reading. The size of a relation's files needs neither.

use crate::problem::Problem;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// Bytes in all the files of one relation (every fork, every 1 GB
/// segment), like `pg_relation_size(rel, fork)` summed over the forks;
/// 0 for a relation without storage or one that no longer exists. Reads
/// the catalog cache and the file system only. A relation being rewritten
/// (VACUUM FULL, TRUNCATE) may read 0 at that instant, and a fork made in
/// the last second may be missed while many relations are being measured
/// (see `Listing`).
pub fn relation_bytes(oid: pg_sys::Oid) -> Result<i64, Problem> {
    let Some(storage) = storage_of(oid) else { return Ok(0) };
    // Only the forks that can exist, so that a view of 100,000 relations
    // does not stat twice as many missing files.
    let heap = matches!(storage.kind, b'r' | b't' | b'm');
    let forks = [
        Some(("", 0)),
        Some(("_fsm", FSM)),
        heap.then_some(("_vm", VM)),
        (storage.persistence == b'u').then_some(("_init", INIT)),
    ];
    let listed = storage.file.and_then(listed_forks);
    forks
        .into_iter()
        .flatten()
        .filter(|&(_, bit)| bit == 0 || listed.is_none_or(|l| l & bit != 0))
        .map(|(fork, _)| fork_bytes(&storage.path, fork))
        .sum()
}

/// Bytes of a relation's main fork, like `pg_relation_size(rel)`, read
/// the same way as `relation_bytes`.
pub fn main_fork_bytes(oid: pg_sys::Oid) -> Result<i64, Problem> {
    storage_of(oid).map_or(Ok(0), |s| fork_bytes(&s.path, ""))
}

/// The same, for a relation whose catalog row the caller has read
/// already (`kind`, `persistence`, `file` and `space` are its relkind,
/// relpersistence, relfilenode and reltablespace): a read of 76,000
/// indexes spent a sixth of its time looking each one up again.
pub fn main_fork_bytes_of(oid: pg_sys::Oid, kind: u8, persistence: u8, file: u32, space: u32) -> Result<i64, Problem> {
    let storage = storage_from(oid, kind, persistence, pg_sys::Oid::from(file), pg_sys::Oid::from(space));
    storage.map_or(Ok(0), |s| fork_bytes(&s.path, ""))
}

/// Where a relation's files are.
struct Storage {
    /// Relative to the data directory.
    path: String,
    kind: u8,
    persistence: u8,
    /// Its file number when the file is in the database's own directory.
    file: Option<u32>,
}

/// The relation's files; None without storage or when it no longer
/// exists. One catalog cache lookup: a view of a large database asks this
/// of 100,000 relations.
fn storage_of(oid: pg_sys::Oid) -> Option<Storage> {
    // SAFETY: one catalog cache lookup; the row is copied out before it
    // is released.
    let (kind, persistence, file, space) = unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, oid.into_datum()?);
        if tuple.is_null() {
            return None;
        }
        let class = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
        let row = (class.relkind as u8, class.relpersistence as u8, class.relfilenode, class.reltablespace);
        pg_sys::ReleaseSysCache(tuple);
        row
    };
    storage_from(oid, kind, persistence, file, space)
}

/// The relation's files from its catalog row.
fn storage_from(oid: pg_sys::Oid, kind: u8, persistence: u8, file: pg_sys::Oid, space: pg_sys::Oid) -> Option<Storage> {
    if !matches!(kind, b'r' | b'i' | b't' | b'm' | b'S') {
        return None;
    }
    // SAFETY: the backend's own database and its default tablespace.
    let default_space = unsafe { pg_sys::MyDatabaseTableSpace };
    let in_base = space == pg_sys::InvalidOid && default_space == pg_sys::DEFAULTTABLESPACE_OID;
    if in_base && persistence != b't' && file != pg_sys::InvalidOid {
        let path = format!("{}/{}", database_dir(), file.to_u32());
        return Some(Storage { path, kind, persistence, file: Some(file.to_u32()) });
    }
    // Mapped catalogs, temporary relations, other tablespaces: the path
    // as PostgreSQL makes it (it returns NULL for a missing relation).
    // SAFETY: pg_relation_filepath looks the relation up by itself.
    let path: Option<String> = unsafe { pgrx::direct_function_call(pg_sys::pg_relation_filepath, &[oid.into_datum()]) };
    path.map(|path| Storage { path, kind, persistence, file: None })
}

/// The database's own directory, relative to the data directory.
fn database_dir() -> String {
    // SAFETY: the backend's database, set once it connected.
    format!("base/{}", unsafe { pg_sys::MyDatabaseId }.to_u32())
}

const FSM: u8 = 1;
const VM: u8 = 2;
const INIT: u8 = 4;

/// Which files of the database's directory have a free space map, a
/// visibility map or an init fork, from one listing of the directory. Most
/// relations have none (an empty partition, a small index), so asking for
/// them one by one made two of every three stat() calls of a view of a
/// large database fail. A listing costs about what ten failed calls per
/// file listed do (120,000 files: 70 ms), so it is made only once a backend
/// has measured `LIST_AFTER` relations within a second, and used for a
/// second only.
struct Listing {
    made: Instant,
    forks: HashMap<u32, u8>,
}

const LIST_AFTER: u32 = 5_000;
const FRESH: Duration = Duration::from_secs(1);

/// Relations measured since `since`, and the listing, if one is fresh.
struct Recent {
    since: Instant,
    measured: u32,
    listing: Option<Listing>,
}

thread_local! {
    static RECENT: RefCell<Option<Recent>> = const { RefCell::new(None) };
}

/// The optional forks of the database's file `file` by a fresh listing,
/// or None when there is none (ask the file system).
fn listed_forks(file: u32) -> Option<u8> {
    RECENT.with(|recent| {
        let now = Instant::now();
        let mut recent = recent.borrow_mut();
        let r = recent.get_or_insert_with(|| Recent { since: now, measured: 0, listing: None });
        if now.duration_since(r.since) > FRESH {
            (r.since, r.measured) = (now, 0);
        }
        r.measured += 1;
        if r.listing.as_ref().is_some_and(|l| now.duration_since(l.made) > FRESH) {
            r.listing = None;
        }
        if r.listing.is_none() && r.measured >= LIST_AFTER {
            r.listing = list(now);
        }
        r.listing.as_ref().map(|l| l.forks.get(&file).copied().unwrap_or(0))
    })
}

/// Lists the database's directory. A listing that cannot be made is not
/// an error: each fork is then asked for on its own, and that reports
/// what is wrong.
fn list(now: Instant) -> Option<Listing> {
    let mut forks: HashMap<u32, u8> = HashMap::new();
    for entry in std::fs::read_dir(database_dir()).ok()? {
        let name = entry.ok()?.file_name();
        let Some((file, fork)) = name.to_str().and_then(|n| n.split_once('_')) else { continue };
        let bit = match fork {
            "fsm" => FSM,
            "vm" => VM,
            "init" => INIT,
            _ => continue,
        };
        if let Ok(file) = file.parse::<u32>() {
            *forks.entry(file).or_default() |= bit;
        }
    }
    Some(Listing { made: now, forks })
}

/// Bytes of one fork: its segments in turn (every one but the last is
/// full). The path is relative to the data directory, the server's
/// working directory.
fn fork_bytes(path: &str, fork: &str) -> Result<i64, Problem> {
    let full_segment = u64::from(pg_sys::RELSEG_SIZE) * u64::from(pg_sys::BLCKSZ);
    let mut total = 0i64;
    for segment in 0.. {
        let file = match segment {
            0 => format!("{path}{fork}"),
            n => format!("{path}{fork}.{n}"),
        };
        match std::fs::metadata(&file) {
            Ok(m) => {
                total += m.len() as i64;
                if m.len() < full_segment {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) => {
                return Err(Problem::new(
                    format!("could not read the size of file \"{file}\": {e}"),
                    "The server cannot read its own data directory: check the file's permissions and the server log.",
                ))
            }
        }
    }
    Ok(total)
}

/// Bytes on disk of one relation: all its forks, without its indexes or
/// TOAST table. Takes no lock and so never waits behind DDL. No SET
/// search_path clause, unlike pg_upkeep's other functions: it runs no SQL,
/// and the clause would be applied and undone on each of the 100,000 calls
/// a view of a large database makes.
#[pg_extern(volatile, strict, parallel_safe, name = "relation_bytes")]
fn relation_bytes_sql(rel: crate::regclass::RegClass) -> i64 {
    crate::errors::guarded("relation_bytes", || {
        relation_bytes(rel.0)
            .unwrap_or_else(|p| crate::errors::bad_input(PgSqlErrorCode::ERRCODE_IO_ERROR, p.message, p.hint))
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::one;
    use pgrx::prelude::*;

    /// What pg_relation_size says of every fork, summed.
    fn forks(rel: &str) -> i64 {
        one(&format!(
            "SELECT sum(pg_relation_size('{rel}', f))::int8 FROM unnest(ARRAY['main', 'fsm', 'vm', 'init']) f"
        ))
    }

    #[pg_test]
    fn the_files_say_what_pg_relation_size_says() {
        Spi::run(
            "CREATE TABLE t (id int PRIMARY KEY, note text);
             INSERT INTO t SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 100) i) 
                  FROM generate_series(1, 2000) g;
             DELETE FROM t WHERE id % 3 = 0;
             CREATE UNLOGGED TABLE u (id int);
             INSERT INTO u SELECT generate_series(1, 100);
             CREATE INDEX u_id ON u (id);
             CREATE TABLE p (d date) PARTITION BY RANGE (d);
             CREATE VIEW v AS SELECT 1;
             CREATE TEMP TABLE tmp AS SELECT generate_series(1, 1000) AS n;
             CREATE SEQUENCE s;",
        )
        .unwrap();
        // Every fork it has, as pg_relation_size() counts them: TOAST, an
        // index, the init fork of an unlogged table; a temporary table, a
        // sequence and a catalog whose file number is mapped (pg_class)
        // have their files elsewhere or by another name.
        let toast: String = one("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 't'");
        for rel in ["t", "t_pkey", "u", "u_id", toast.as_str(), "tmp", "s", "pg_class", "pg_class_oid_index"] {
            let files: i64 = one(&format!("SELECT upkeep.relation_bytes('{rel}')"));
            assert_eq!(files, forks(rel), "{rel}");
            assert!(files > 0, "{rel}");
        }
        assert!(forks("u_id") > one::<i64>("SELECT pg_relation_size('u_id')"), "an unlogged index has an init fork");
        assert_eq!(one::<i64>("SELECT upkeep.relation_bytes('p')"), 0, "a partitioned table has no storage");
        assert_eq!(one::<i64>("SELECT upkeep.relation_bytes('v')"), 0, "a view has no storage");
        assert_eq!(one::<i64>("SELECT upkeep.relation_bytes(4294967295::oid::regclass)"), 0, "no such relation");
    }
}
