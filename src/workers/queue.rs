//! The launcher's queue of databases. A database is due for a scheduler
//! when `due` says so; at most `upkeep.max_schedulers` run
//! at once, so that the launcher never takes every background-worker slot
//! of the server, and the database that has waited longest goes first, so
//! none is passed over cycle after cycle. How long each database has been
//! waiting past its due time is published in shared memory, where
//! `upkeep.metrics` reads it for its own database.

use pgrx::prelude::*;
use pgrx::{PGRXSharedMemory, PgLwLock};

/// Which of the due databases to start now: those due longest, at most
/// `free` of them. `due` holds (database, when it became due), any order.
pub fn next_to_start<T: Ord + Copy>(mut due: Vec<(u32, T)>, free: usize) -> Vec<u32> {
    due.sort_by_key(|&(db, at)| (at, db));
    due.into_iter().take(free).map(|(db, _)| db).collect()
}

/// How many waiting databases shared memory can tell about; one more
/// waits all the same, it is only not shown.
const SHOWN: usize = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct Wait {
    database: u32,
    /// When it became due, in ms since the Unix epoch; 0: not waiting.
    since_ms: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Waits {
    waits: [Wait; SHOWN],
}

impl Default for Waits {
    fn default() -> Self {
        Waits { waits: [Wait::default(); SHOWN] }
    }
}

// SAFETY: plain integers, no pointers.
unsafe impl PGRXSharedMemory for Waits {}

static WAITS: PgLwLock<Waits> = unsafe { PgLwLock::new(c"pg_upkeep scheduler waits") };

/// Reserves the table; called from `_PG_init` during preload only.
pub fn init_shared_memory() {
    pgrx::pg_shmem_init!(WAITS);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Publishes the databases waiting past their due time (database, how
/// long ago it became due); everything else shows as not waiting.
pub fn publish(waiting: &[(u32, std::time::Duration)]) {
    let now = now_ms();
    let mut table = WAITS.exclusive();
    table.waits = [Wait::default(); SHOWN];
    for (slot, &(database, ago)) in table.waits.iter_mut().zip(waiting) {
        *slot = Wait { database, since_ms: now - ago.as_millis() as i64 };
    }
}

/// Seconds this database's scheduler has been waiting for its turn past
/// its due time: 0 when it is not waiting, NULL without the workers.
#[pg_extern(volatile, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn scheduler_wait_seconds() -> Option<f64> {
    crate::errors::guarded("scheduler_wait_seconds", || {
        if !super::preloaded() {
            return None;
        }
        // SAFETY: the id of the database this backend is connected to.
        let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
        let since = WAITS.share().waits.iter().find(|w| w.database == db && w.since_ms != 0).map(|w| w.since_ms);
        Some(since.map_or(0.0, |s| ((now_ms() - s).max(0)) as f64 / 1000.0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_waiting_go_first_and_no_more_than_the_free_slots() {
        let due = vec![(7, 300), (3, 100), (9, 200), (1, 100)];
        assert_eq!(next_to_start(due.clone(), 2), [1, 3]);
        assert_eq!(next_to_start(due.clone(), 10), [1, 3, 9, 7]);
        assert!(next_to_start(due, 0).is_empty());
    }

    #[test]
    fn every_database_is_started_within_a_bounded_number_of_rounds() {
        // 60 databases, 3 scheduler slots, each served takes its round and
        // is due again a naptime (10 rounds) later: everyone is served,
        // none waits more than 60 / 3 rounds.
        let mut due: Vec<(u32, u64)> = (0..60).map(|db| (db, 0)).collect();
        let mut last: Vec<Option<u64>> = vec![None; 60];
        let mut longest = 0;
        for round in 0..200u64 {
            let ready: Vec<(u32, u64)> = due.iter().copied().filter(|&(_, at)| at <= round).collect();
            for db in next_to_start(ready, 3) {
                let i = db as usize;
                longest = longest.max(round - due[i].1);
                last[i] = Some(round);
                due[i].1 = round + 10;
            }
        }
        assert!(last.iter().all(Option::is_some), "every database served");
        assert!(longest <= 20, "waited {longest} rounds");
    }
}
