//! Runs that never finished. Before a scheduler or worker takes an action
//! it commits a `running` row in the run log naming its process, and
//! removes it once the action's own record is written. A crash, a kill -9
//! or an immediate shutdown leaves the row behind; the next scheduler cycle
//! turns it into `interrupted`, so the run log says what happened.
//! PostgreSQL rolled back what the action had not committed; an action of
//! several transactions resumes from `upkeep.unfinished_actions`.

use crate::actions::Action;
use crate::errors::Found;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// Whether the installed SQL's run log takes these statuses (0.3.0 on): a
/// new library on the previous version's SQL, until ALTER EXTENSION
/// UPDATE, writes no markers rather than failing. Read once per process: a
/// scheduler lives one cycle, a worker one job.
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        BackgroundWorker::transaction(|| {
            Spi::get_one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c \
                  WHERE c.conrelid OPERATOR(pg_catalog.=) 'upkeep.job_runs'::pg_catalog.regclass \
                    AND pg_catalog.strpos(pg_catalog.pg_get_constraintdef(c.oid), 'interrupted') OPERATOR(pg_catalog.>) 0)",
            )
            .found()
            .unwrap_or(false)
        })
    })
}

/// Takes `action` with `take`, with a `running` row in the run log while it
/// runs (when `marks`).
pub fn around<R>(marks: bool, action: Action, take: impl FnOnce(Action) -> R) -> R {
    let running = Running::begin(marks, &action);
    let done = take(action);
    running.end();
    done
}

/// The `running` row of an action being taken, if the runner marks them.
struct Running(Option<i64>);

impl Running {
    /// Commits the `running` row of an action about to start (when `marks`).
    fn begin(marks: bool, action: &Action) -> Running {
        if !marks {
            return Running(None);
        }
        Running(BackgroundWorker::transaction(|| {
            Spi::get_one_with_args::<i64>(
                "INSERT INTO upkeep.job_runs (job_id, action, target, started_at, duration, status, detail, sql) \
                 VALUES ($1, $2, $3, pg_catalog.clock_timestamp(), '0', 'running', \
                         'running in process ' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid(), $4) \
                 RETURNING run_id",
                &[
                    action.job_id.into(),
                    action.kind.to_string().into(),
                    action.target.to_string().into(),
                    action.script().into(),
                ],
            )
            .unwrap_or_else(|e| error!("pg_upkeep could not write to upkeep.job_runs: {e}"))
        }))
    }

    /// Removes the `running` row once the action has its own record.
    fn end(self) {
        if let Some(run_id) = self.0 {
            BackgroundWorker::transaction(|| {
                Spi::run_with_args(
                    "DELETE FROM upkeep.job_runs \
                      WHERE run_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'running'",
                    &[run_id.into()],
                )
                .unwrap_or_else(|e| error!("pg_upkeep could not write to upkeep.job_runs: {e}"))
            });
        }
    }
}

/// Turns the `running` rows of processes that are gone into `interrupted`
/// (a process id reused since is told apart by its start time).
pub fn sweep() {
    Spi::run(
        "UPDATE upkeep.job_runs r \
            SET status = 'interrupted', \
                detail = pg_catalog.format('did not finish: process %s ended first (terminated, killed, or the server crashed or stopped at once); \
what it had not committed was rolled back, and a later run takes the work up again', p.pid) \
           FROM (SELECT run_id, pg_catalog.substring(detail, 'process ([0-9]+)')::int4 AS pid \
                   FROM upkeep.job_runs WHERE status OPERATOR(pg_catalog.=) 'running') p \
          WHERE r.run_id OPERATOR(pg_catalog.=) p.run_id \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
                             WHERE a.pid OPERATOR(pg_catalog.=) p.pid \
                               AND a.backend_start OPERATOR(pg_catalog.<=) r.started_at)",
    )
    .unwrap_or_else(|e| error!("pg_upkeep could not write to upkeep.job_runs: {e}"));
}
