//! When each database next needs a scheduler. Starting one only to find
//! that nothing is due costs about 10 ms of CPU per database per naptime;
//! instead each scheduler tells, at the end of its cycle, when its
//! database's next job is due (the earliest `upkeep.jobs.next_run`), and a
//! committed change to a policy (a manage_* call, alter_job, or a plain
//! INSERT or UPDATE) nudges the launcher. The launcher starts a scheduler
//! when that time has come, when nudged, when it does not know (never
//! started there, or the last scheduler ended before it could tell), and
//! at least every `RECHECK`, because DDL by others (a partition dropped by
//! hand) tells pg_upkeep nothing. Never more often than once a naptime.

use pgrx::prelude::*;
use pgrx::{PGRXSharedMemory, PgLwLock};
use std::time::{Duration, Instant};

/// A database is visited at least this often even when nothing is due.
pub const RECHECK: Duration = Duration::from_secs(3600);

/// How many databases shared memory can tell about; the others are
/// visited every naptime, as if nothing were known.
const ENTRIES: usize = 1024;

/// What the last scheduler of a database said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing said yet: it is running, or ended before it could tell.
    Unknown,
    /// Its next job is due then (ms since the Unix epoch).
    At(i64),
    /// No enabled job, or no extension.
    Nothing,
}

const UNKNOWN_MS: i64 = 0;
const NOTHING_MS: i64 = i64::MAX;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    database: u32,
    next_ms: i64,
    /// Policy changes committed so far; the launcher compares counts.
    nudges: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Table {
    entries: [Entry; ENTRIES],
    /// The launcher's latch (an address in shared memory), 0: none yet.
    launcher_latch: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table { entries: [Entry::default(); ENTRIES], launcher_latch: 0 }
    }
}

// SAFETY: integers only; the latch address points into shared memory,
// which every server process maps at the same address.
unsafe impl PGRXSharedMemory for Table {}

static TABLE: PgLwLock<Table> = unsafe { PgLwLock::new(c"pg_upkeep next due") };

/// Reserves the table; called from `_PG_init` during preload only.
pub fn init_shared_memory() {
    pgrx::pg_shmem_init!(TABLE);
}

/// When a database is due for its next scheduler: at once if none was
/// started yet; otherwise not before a naptime after the last start, and
/// then when nudged since that start, when its next job is due, when
/// nothing is known, or at the latest `RECHECK` after the last start.
/// `now` and `now_ms` are the same moment on both clocks.
pub fn due_at(
    last_start: Option<Instant>,
    naptime: Duration,
    next: Next,
    nudged: bool,
    now: Instant,
    now_ms: i64,
) -> Option<Instant> {
    let start = last_start?;
    let earliest = start + naptime;
    let told = match next {
        _ if nudged => return Some(earliest),
        Next::Unknown => return Some(earliest),
        Next::At(ms) if ms <= now_ms => now,
        Next::At(ms) => now + Duration::from_millis((ms - now_ms) as u64),
        Next::Nothing => start + RECHECK,
    };
    Some(earliest.max(told.min(start + RECHECK)))
}

/// What the launcher knows of one database.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub next: Next,
    pub nudges: u64,
}

/// The launcher: from now on, policy changes wake it.
pub fn launcher_started() {
    // SAFETY: after connecting, MyLatch is this process's latch in shared
    // memory; other processes may set it.
    let latch = unsafe { pg_sys::MyLatch } as usize;
    TABLE.exclusive().launcher_latch = latch;
}

/// The launcher, about to start a scheduler for `database`: forgets what
/// the last one said, and returns the nudges counted so far.
pub fn starting(database: u32) -> u64 {
    let mut table = TABLE.exclusive();
    let entries = &mut table.entries;
    let found = entries.iter().position(|e| e.database == database).or_else(|| {
        let free = entries.iter().position(|e| e.database == 0)?;
        entries[free] = Entry { database, next_ms: UNKNOWN_MS, nudges: 0 };
        Some(free)
    });
    found.map_or(0, |i| {
        entries[i].next_ms = UNKNOWN_MS;
        entries[i].nudges
    })
}

/// The launcher: what is known of `database` (nothing when it has no entry).
pub fn known(database: u32) -> Known {
    let table = TABLE.share();
    let entry = table.entries.iter().find(|e| e.database == database);
    let next = match entry.map_or(UNKNOWN_MS, |e| e.next_ms) {
        UNKNOWN_MS => Next::Unknown,
        NOTHING_MS => Next::Nothing,
        ms => Next::At(ms),
    };
    Known { next, nudges: entry.map_or(0, |e| e.nudges) }
}

/// The launcher: drops the entries of databases it no longer serves.
pub fn keep_only(databases: &[u32]) {
    for entry in TABLE.exclusive().entries.iter_mut().filter(|e| e.database != 0 && !databases.contains(&e.database)) {
        *entry = Entry::default();
    }
}

/// A scheduler, at the end of its cycle: when its database's next job is
/// due (ms since the Unix epoch), `None` for nothing.
pub fn publish(next_ms: Option<i64>) {
    // SAFETY: the id of the database this process is connected to.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    // A job due at the epoch or before is due now; 0 would read as unknown.
    let ms = next_ms.map_or(NOTHING_MS, |ms| ms.clamp(1, NOTHING_MS - 1));
    if let Some(entry) = TABLE.exclusive().entries.iter_mut().find(|e| e.database == database) {
        entry.next_ms = ms;
    }
}

/// Counts a policy change in this database and wakes the launcher; runs
/// once the transaction has committed, so that the scheduler it starts
/// sees the change.
fn nudge() {
    // SAFETY: the id of the database this backend is connected to.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let latch = {
        let mut table = TABLE.exclusive();
        if let Some(entry) = table.entries.iter_mut().find(|e| e.database == database) {
            entry.nudges = entry.nudges.wrapping_add(1);
        }
        table.launcher_latch
    };
    if latch != 0 {
        // SAFETY: the launcher's latch; setting a latch whose process has
        // gone only wakes whoever took its slot, which latches allow.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

thread_local! {
    /// Whether this transaction already nudges at commit.
    static PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Trigger function of `upkeep_wake_workers` on the policy tables: after a
/// row is registered or changed, the launcher is nudged when the
/// transaction commits (once per transaction). A row trigger, not a
/// statement trigger: the manage_* functions read one row of their INSERT
/// ... RETURNING, and a statement stopped there fires no AFTER STATEMENT
/// trigger.
#[pg_trigger]
fn wake_workers<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::heap_tuple::PgHeapTupleError> {
    if super::preloaded() && !PENDING.get() {
        PENDING.set(true);
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
            PENDING.set(false);
            nudge();
        });
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || PENDING.set(false));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAP: Duration = Duration::from_secs(10);

    fn at(start: Instant, next: Next, nudged: bool, now: Instant) -> Duration {
        // The wall clock reads 1,000,000 ms at `start`.
        let now_ms = 1_000_000 + now.duration_since(start).as_millis() as i64;
        due_at(Some(start), NAP, next, nudged, now, now_ms).unwrap().duration_since(start)
    }

    #[test]
    fn a_database_never_visited_is_due_at_once() {
        let now = Instant::now();
        assert_eq!(due_at(None, NAP, Next::Nothing, false, now, 0), None);
    }

    #[test]
    fn nothing_due_waits_for_the_recheck_and_a_due_job_for_its_time() {
        let s = Instant::now();
        assert_eq!(at(s, Next::Nothing, false, s), RECHECK);
        // Due in 5 minutes, said at the start.
        assert_eq!(at(s, Next::At(1_000_000 + 300_000), false, s), Duration::from_secs(300));
        // Due in two days: the recheck comes first.
        assert_eq!(at(s, Next::At(1_000_000 + 172_800_000), false, s), RECHECK);
    }

    #[test]
    fn never_more_often_than_a_naptime() {
        let s = Instant::now();
        // Due already (a job left for a busy worker pool), nudged, unknown.
        assert_eq!(at(s, Next::At(999_000), false, s + Duration::from_secs(1)), NAP);
        assert_eq!(at(s, Next::Nothing, true, s + Duration::from_secs(1)), NAP);
        assert_eq!(at(s, Next::Unknown, false, s + Duration::from_secs(1)), NAP);
        // Past the naptime, a due job starts now.
        let later = s + Duration::from_secs(30);
        assert_eq!(at(s, Next::At(1_000_000 + 20_000), false, later), Duration::from_secs(30));
    }

    #[test]
    fn a_nudge_counts_only_if_it_came_after_the_last_start() {
        let s = Instant::now();
        let now = s + Duration::from_secs(60);
        assert_eq!(at(s, Next::Nothing, false, now), RECHECK);
        assert_eq!(at(s, Next::Nothing, true, now), NAP);
    }
}
