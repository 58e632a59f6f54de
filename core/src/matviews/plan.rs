//! Planning refreshes: which managed views to refresh now and why, in
//! dependency order, and which tables to start or stop tracking. Pure: no
//! SPI here, unit-tested without a database.

use super::tracking as changes;
use crate::actions::{Action, ActionKind, Step};
use crate::sql::{ident, QualifiedName};
use std::collections::{BTreeMap, BTreeSet};

/// A table a view reads whose changes are not tracked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untracked {
    pub table: QualifiedName,
    /// Whether the view's owner may create the tracking trigger on it.
    pub allowed: bool,
}

/// What the catalogs say about one managed view.
#[derive(Debug, Clone, Default)]
pub struct ViewFacts {
    pub job_id: i64,
    /// The snapshot these facts were read in, with the transaction (if it
    /// has an ID yet) and command that read them.
    pub snapshot: String,
    pub xid: Option<String>,
    pub cid: i64,
    pub matview: QualifiedName,
    /// It still exists as a materialized view.
    pub exists: bool,
    pub owner: String,
    pub populated: bool,
    pub concurrently: bool,
    pub only_when_changed: bool,
    pub enabled: bool,
    /// Its schedule or back-off lets it run now.
    pub scheduled: bool,
    /// It has a unique index REFRESH ... CONCURRENTLY can use.
    pub unique_key: bool,
    /// Jobs of the managed views it reads (directly or through plain views).
    pub upstream: Vec<i64>,
    /// The relations it reads, and a fingerprint of them and their tracking.
    pub bases: Vec<u32>,
    pub fingerprint: String,
    /// Why its changes cannot all be seen (empty: they can).
    pub unsure: Vec<String>,
    pub untracked: Vec<Untracked>,
    /// pg_upkeep has refreshed it before (and remembers what that saw).
    pub refreshed: bool,
    /// Relations changed by transactions its last refresh did not see.
    pub changed: Vec<String>,
    /// It reads other relations, or queries (a plain view it reads was
    /// redefined), or they are tracked otherwise, than at its last refresh.
    pub moved: bool,
}

/// Which views a run is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Enabled views whose schedule lets them run now.
    Due,
    /// One view, whatever its schedule.
    Job(i64),
    /// The due views of one group of views that read each other (what one
    /// worker process refreshes, in order).
    Group(i64),
    /// Every enabled view.
    All,
}

/// What a run does with a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refresh it, for this reason; `populate` when it has no data yet,
    /// which takes one plain refresh.
    Refresh {
        reason: String,
        populate: bool,
    },
    Skip(String),
    /// It cannot be refreshed as its policy says.
    Problem(Problem),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Dropped,
    NoUniqueKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Index into the facts.
    pub view: usize,
    pub decision: Decision,
}

/// Views in dependency order: a view after every managed view it reads,
/// ties by job id. (PostgreSQL cannot make a cycle; if the facts had one,
/// its views would follow the rest, by job id.)
pub fn order(views: &[ViewFacts]) -> Vec<usize> {
    let index: BTreeMap<i64, usize> = views.iter().enumerate().map(|(i, v)| (v.job_id, i)).collect();
    // Who reads each view, so that each edge is walked once (scanning
    // every view per view placed grew with the square of the views).
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); views.len()];
    let mut waiting = vec![0usize; views.len()];
    for (k, v) in views.iter().enumerate() {
        let upstream: BTreeSet<usize> = v.upstream.iter().filter_map(|j| index.get(j).copied()).collect();
        waiting[k] = upstream.len();
        for u in upstream {
            readers[u].push(k);
        }
    }
    let mut ready: BTreeSet<(i64, usize)> =
        (0..views.len()).filter(|&i| waiting[i] == 0).map(|i| (views[i].job_id, i)).collect();
    let mut placed = vec![false; views.len()];
    let mut out = Vec::with_capacity(views.len());
    while let Some((_, i)) = ready.pop_first() {
        out.push(i);
        placed[i] = true;
        for &k in &readers[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.insert((views[k].job_id, k));
            }
        }
    }
    let mut rest: Vec<usize> = (0..views.len()).filter(|&i| !placed[i]).collect();
    rest.sort_by_key(|&i| views[i].job_id);
    out.extend(rest);
    out
}

/// Each view's group: the smallest job id among the views connected to it
/// by reading or being read. One worker refreshes one group, in order.
pub fn groups(views: &[ViewFacts]) -> BTreeMap<i64, i64> {
    let mut group: BTreeMap<i64, i64> = views.iter().map(|v| (v.job_id, v.job_id)).collect();
    loop {
        let mut changed = false;
        for v in views {
            for u in &v.upstream {
                let Some(&theirs) = group.get(u) else { continue };
                let least = group[&v.job_id].min(theirs);
                for j in [v.job_id, *u] {
                    if group[&j] != least {
                        group.insert(j, least);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return group;
        }
    }
}

/// What to do with each view in the run, in dependency order. A view is in
/// the run when selected, or when it is refreshed only when changed and a
/// view it reads is refreshed in this run. `force` refreshes the views
/// selected whether or not anything changed.
pub fn plan(views: &[ViewFacts], selection: Selection, force: bool) -> Vec<Planned> {
    let group = groups(views);
    let selected = |v: &ViewFacts| match selection {
        Selection::Due => v.enabled && v.scheduled,
        Selection::Job(j) => v.job_id == j,
        Selection::Group(g) => v.enabled && v.scheduled && group.get(&v.job_id) == Some(&g),
        Selection::All => v.enabled,
    };
    let mut refreshing: BTreeMap<i64, &QualifiedName> = BTreeMap::new();
    let mut out = Vec::new();
    for i in order(views) {
        let v = &views[i];
        let after: Vec<String> = v.upstream.iter().filter_map(|u| refreshing.get(u)).map(|q| q.to_string()).collect();
        let cascades = v.enabled && v.only_when_changed && !after.is_empty();
        if !selected(v) && !cascades {
            continue;
        }
        let decision = if !v.exists {
            Decision::Problem(Problem::Dropped)
        } else if v.concurrently && !v.unique_key {
            Decision::Problem(Problem::NoUniqueKey)
        } else {
            match why_refresh(v, force, &after) {
                Some(reason) => Decision::Refresh { reason, populate: !v.populated },
                None => Decision::Skip(format!(
                    "skipped: nothing it reads changed since its last refresh ({})",
                    if v.bases.is_empty() {
                        "it reads no table".to_string()
                    } else {
                        plural(v.bases.len(), "relation")
                    }
                )),
            }
        };
        if matches!(decision, Decision::Refresh { .. }) {
            refreshing.insert(v.job_id, &v.matview);
        }
        out.push(Planned { view: i, decision });
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Why the view must be refreshed now, or None when it may be skipped.
fn why_refresh(v: &ViewFacts, force: bool, after: &[String]) -> Option<String> {
    if force {
        return Some("forced".into());
    }
    if !v.only_when_changed {
        return Some("scheduled (only_when_changed is off)".into());
    }
    if !v.refreshed {
        return Some("first refresh by pg_upkeep".into());
    }
    if !after.is_empty() {
        return Some(format!("reads {}, refreshed just before in this run", after.join(", ")));
    }
    if !v.changed.is_empty() {
        return Some(format!("changed since its last refresh: {}", v.changed.join(", ")));
    }
    if v.moved {
        return Some(
            "what it reads changed since its last refresh: other relations, a view it reads redefined, or their tracking"
                .into(),
        );
    }
    let unsure: Vec<String> = v.unsure.iter().cloned().chain(not_allowed(v)).collect();
    if !unsure.is_empty() {
        return Some(format!("refreshed when unsure: {}", unsure.join("; ")));
    }
    None
}

/// The refresh statement: CONCURRENTLY when the policy asks for it and the
/// view has data (PostgreSQL refuses CONCURRENTLY on an empty view).
pub fn refresh_action(v: &ViewFacts, reason: &str, populate: bool) -> Action {
    let concurrently = v.concurrently && !populate;
    let detail = if v.concurrently && populate {
        format!("{reason}; not populated yet, so one plain refresh first (CONCURRENTLY from the next one on)")
    } else {
        reason.to_string()
    };
    Action {
        job_id: v.job_id,
        kind: ActionKind::RefreshMatview,
        target: v.matview.clone(),
        detail,
        run_as: v.owner.clone(),
        steps: vec![Step::new(format!(
            "REFRESH MATERIALIZED VIEW {}{}",
            if concurrently { "CONCURRENTLY " } else { "" },
            v.matview.quoted()
        ))],
    }
}

/// Start tracking the tables the planned views refreshed only when changed
/// read and whose owners allow it, each table once; stop tracking the
/// tables no such view reads (`unneeded`: table and owner).
pub fn tracking_actions(views: &[ViewFacts], planned: &[Planned], unneeded: &[(QualifiedName, String)]) -> Vec<Action> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in planned {
        let v = &views[p.view];
        if !v.only_when_changed || !v.exists {
            continue;
        }
        for u in v.untracked.iter().filter(|u| u.allowed) {
            if seen.insert(u.table.clone()) {
                out.push(Action {
                    job_id: v.job_id,
                    kind: ActionKind::TrackChanges,
                    target: u.table.clone(),
                    detail: format!("so that {} is refreshed only when it changed", v.matview),
                    run_as: v.owner.clone(),
                    steps: changes::track_sql(&u.table).into_iter().map(Step::new).collect(),
                });
            }
        }
    }
    out.extend(unneeded.iter().map(|(table, owner)| Action {
        job_id: 0,
        kind: ActionKind::UntrackChanges,
        target: table.clone(),
        detail: "no managed view refreshed only when changed reads it any more".into(),
        run_as: owner.clone(),
        steps: vec![Step::new(changes::untrack_sql(table))],
    }));
    out
}

/// Tables the owner may not track, as reasons for the run log.
pub fn not_allowed(v: &ViewFacts) -> Vec<String> {
    v.untracked
        .iter()
        .filter(|u| !u.allowed)
        .map(|u| {
            format!(
                "{} may not create triggers on {}: GRANT TRIGGER ON {} TO {} lets pg_upkeep track it",
                v.owner,
                u.table,
                u.table.quoted(),
                ident(&v.owner)
            )
        })
        .collect()
}

/// The statement that makes CONCURRENTLY possible: a unique index on the
/// view's key columns.
pub fn unique_index_sql(matview: &QualifiedName, key: &[String]) -> String {
    let cols: Vec<String> = key.iter().map(|c| ident(c)).collect();
    format!("CREATE UNIQUE INDEX ON {} ({});", matview.quoted(), cols.join(", "))
}

/// The view's status for `upkeep.matview_status` and a hint; `unique_hint`
/// builds the CREATE UNIQUE INDEX when one is needed.
pub fn status(v: &ViewFacts, unique_hint: impl FnOnce() -> String) -> (&'static str, Option<String>) {
    if !v.exists {
        return (
            "dropped",
            Some(format!(
                "The materialized view was dropped: SELECT upkeep.unmanage_matview({}); forgets its policy.",
                v.matview.name
            )),
        );
    }
    if v.concurrently && !v.unique_key {
        return (
            "cannot refresh concurrently",
            Some(format!(
                "Add a unique index on plain columns, without WHERE: {} (or manage it with concurrently => false)",
                unique_hint()
            )),
        );
    }
    if !v.populated {
        return (
            "not populated",
            Some("The next run populates it with one plain refresh; until then reading it is an error.".into()),
        );
    }
    if !v.refreshed {
        return (
            "not refreshed yet",
            Some(format!(
                "Refreshed at next_due; SELECT * FROM upkeep.refresh_matviews('{}'); does it now.",
                v.matview
            )),
        );
    }
    if changed_since(v) == Some(true) {
        return ("changed", Some("What it reads changed since its last refresh: it is refreshed at next_due.".into()));
    }
    ("ok", None)
}

/// Whether what the view reads changed since its last refresh by
/// pg_upkeep; None when that cannot be known.
pub fn changed_since(v: &ViewFacts) -> Option<bool> {
    if !v.refreshed || !v.changed.is_empty() || v.moved {
        Some(true)
    } else if !v.unsure.is_empty() {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(job: i64, upstream: &[i64]) -> ViewFacts {
        ViewFacts {
            job_id: job,
            matview: QualifiedName::new("public", format!("mv{job}")),
            exists: true,
            owner: "app".into(),
            populated: true,
            concurrently: true,
            only_when_changed: true,
            enabled: true,
            scheduled: true,
            unique_key: true,
            upstream: upstream.to_vec(),
            bases: vec![16_384],
            fingerprint: "f".into(),
            refreshed: true,
            ..ViewFacts::default()
        }
    }

    fn jobs(views: &[ViewFacts], order: &[usize]) -> Vec<i64> {
        order.iter().map(|&i| views[i].job_id).collect()
    }

    fn decisions(views: &[ViewFacts], planned: &[Planned]) -> Vec<(i64, bool)> {
        planned.iter().map(|p| (views[p.view].job_id, matches!(p.decision, Decision::Refresh { .. }))).collect()
    }

    #[test]
    fn orders_by_dependency_then_job() {
        // 9 reads 5 reads 7; 3 stands alone; 8 reads 9 and 3.
        let views = vec![view(9, &[5]), view(3, &[]), view(8, &[9, 3]), view(5, &[7]), view(7, &[])];
        assert_eq!(jobs(&views, &order(&views)), vec![3, 7, 5, 9, 8]);
        // Reading a view that is not managed does not hold anything back.
        let views = vec![view(2, &[99]), view(1, &[])];
        assert_eq!(jobs(&views, &order(&views)), vec![1, 2]);
        // A cycle (impossible in PostgreSQL) still lists every view once.
        let views = vec![view(1, &[2]), view(2, &[1]), view(3, &[])];
        assert_eq!(jobs(&views, &order(&views)), vec![3, 1, 2]);
    }

    #[test]
    fn groups_connect_readers_and_read() {
        let views = vec![view(4, &[2]), view(2, &[]), view(6, &[]), view(7, &[6]), view(9, &[4])];
        let g = groups(&views);
        assert_eq!((g[&4], g[&2], g[&9]), (2, 2, 2));
        assert_eq!((g[&6], g[&7]), (6, 6));
    }

    #[test]
    fn unchanged_views_are_skipped_changed_ones_refreshed() {
        let mut views = vec![view(1, &[]), view(2, &[]), view(3, &[])];
        views[1].changed = vec!["public.trades".into()];
        views[2].moved = true;
        let planned = plan(&views, Selection::Due, false);
        assert_eq!(decisions(&views, &planned), vec![(1, false), (2, true), (3, true)]);
        let Decision::Refresh { reason, .. } = &planned[1].decision else { panic!() };
        assert!(reason.contains("public.trades"), "{reason}");
        let Decision::Skip(why) = &planned[0].decision else { panic!() };
        assert!(why.contains("nothing it reads changed"), "{why}");
        // force refreshes anyway; so does a view not refreshed only when changed.
        assert!(plan(&views, Selection::Due, true).iter().all(|p| matches!(p.decision, Decision::Refresh { .. })));
        views[0].only_when_changed = false;
        assert_eq!(decisions(&views, &plan(&views, Selection::Due, false))[0], (1, true));
    }

    #[test]
    fn unsure_and_first_refreshes_say_why() {
        let mut views = vec![view(1, &[]), view(2, &[])];
        views[0].unsure = vec!["reads foreign table public.remote, whose changes cannot be seen".into()];
        views[1].refreshed = false;
        let planned = plan(&views, Selection::Due, false);
        let reasons: Vec<String> = planned
            .iter()
            .map(|p| match &p.decision {
                Decision::Refresh { reason, .. } => reason.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(reasons[0].starts_with("refreshed when unsure: reads foreign table"), "{}", reasons[0]);
        assert_eq!(reasons[1], "first refresh by pg_upkeep");
    }

    #[test]
    fn a_refreshed_view_makes_its_readers_due_in_order() {
        // Chain 1 <- 2 <- 3; only 1 is due and changed; 3 is not refreshed
        // only when changed, so it keeps its own schedule.
        let mut views = vec![view(3, &[2]), view(2, &[1]), view(1, &[])];
        for v in &mut views[..2] {
            v.scheduled = false;
        }
        views[2].changed = vec!["public.t".into()];
        assert_eq!(decisions(&views, &plan(&views, Selection::Due, false)), vec![(1, true), (2, true), (3, true)]);
        views[0].only_when_changed = false;
        assert_eq!(decisions(&views, &plan(&views, Selection::Due, false)), vec![(1, true), (2, true)]);
        // Nothing changed upstream: nothing cascades.
        views[2].changed.clear();
        assert_eq!(decisions(&views, &plan(&views, Selection::Due, false)), vec![(1, false)]);
        // Paused readers do not cascade.
        views[2].changed = vec!["public.t".into()];
        views[1].enabled = false;
        assert_eq!(decisions(&views, &plan(&views, Selection::Due, false)), vec![(1, true)]);
    }

    #[test]
    fn selections() {
        let mut views = vec![view(1, &[]), view(2, &[1]), view(5, &[]), view(6, &[])];
        views[3].enabled = false;
        views[2].scheduled = false;
        let picked = |s| plan(&views, s, true).iter().map(|p| views[p.view].job_id).collect::<Vec<_>>();
        assert_eq!(picked(Selection::Due), vec![1, 2]);
        assert_eq!(picked(Selection::All), vec![1, 2, 5]);
        assert_eq!(picked(Selection::Job(6)), vec![6], "an explicit view runs even when paused");
        assert_eq!(picked(Selection::Group(1)), vec![1, 2]);
        assert_eq!(picked(Selection::Group(5)), Vec::<i64>::new(), "5 is not due");
    }

    #[test]
    fn problems_are_reported_not_refreshed() {
        let mut views = vec![view(1, &[]), view(2, &[])];
        views[0].exists = false;
        views[1].unique_key = false;
        let planned = plan(&views, Selection::Due, false);
        assert_eq!(planned[0].decision, Decision::Problem(Problem::Dropped));
        assert_eq!(planned[1].decision, Decision::Problem(Problem::NoUniqueKey));
        // Without CONCURRENTLY no unique index is needed.
        views[1].concurrently = false;
        assert!(matches!(plan(&views, Selection::Due, false)[1].decision, Decision::Skip(_)));
    }

    #[test]
    fn refresh_statements_are_quoted_and_populate_first() {
        let mut v = view(1, &[]);
        v.matview = QualifiedName::new("Sales \"EU\"", "mv; DROP TABLE x");
        let a = refresh_action(&v, "forced", false);
        assert_eq!(a.steps[0].sql, r#"REFRESH MATERIALIZED VIEW CONCURRENTLY "Sales ""EU"""."mv; DROP TABLE x""#);
        let a = refresh_action(&v, "forced", true);
        assert_eq!(a.steps[0].sql, r#"REFRESH MATERIALIZED VIEW "Sales ""EU"""."mv; DROP TABLE x""#);
        assert!(a.detail.contains("one plain refresh first"), "{}", a.detail);
        assert_eq!(
            unique_index_sql(&v.matview, &["fund id".into(), "day".into()]),
            r#"CREATE UNIQUE INDEX ON "Sales ""EU"""."mv; DROP TABLE x" ("fund id", "day");"#
        );
    }

    #[test]
    fn tracking_starts_once_per_table_and_stops_when_unneeded() {
        let t = QualifiedName::new("public", "trades");
        let mut views = vec![view(1, &[]), view(2, &[]), view(3, &[])];
        for v in &mut views {
            v.untracked = vec![Untracked { table: t.clone(), allowed: true }];
        }
        views[2].only_when_changed = false;
        views[1].untracked.push(Untracked { table: QualifiedName::new("hr", "pay"), allowed: false });
        let planned = plan(&views, Selection::Due, false);
        let gone = [(QualifiedName::new("public", "old"), "bob".to_string())];
        let actions = tracking_actions(&views, &planned, &gone);
        let kinds: Vec<(ActionKind, String)> = actions.iter().map(|a| (a.kind, a.target.to_string())).collect();
        assert_eq!(
            kinds,
            vec![(ActionKind::TrackChanges, "public.trades".into()), (ActionKind::UntrackChanges, "public.old".into())]
        );
        assert!(actions[0].steps[0].sql.starts_with(
            r#"CREATE TRIGGER "upkeep_track_changes" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "public"."trades""#
        ));
        assert_eq!(actions[1].run_as, "bob");
        assert!(not_allowed(&views[1])[0].contains(r#"GRANT TRIGGER ON "hr"."pay" TO "app""#));
    }

    #[test]
    fn status_and_changed_since() {
        let mut v = view(1, &[]);
        assert_eq!(status(&v, String::new), ("ok", None));
        assert_eq!(changed_since(&v), Some(false));
        v.unsure = vec!["x".into()];
        assert_eq!(changed_since(&v), None);
        v.changed = vec!["public.t".into()];
        assert_eq!(status(&v, String::new).0, "changed");
        v.unique_key = false;
        let (s, hint) = status(&v, || "CREATE UNIQUE INDEX ON x (a);".into());
        assert_eq!(s, "cannot refresh concurrently");
        assert!(hint.unwrap().contains("CREATE UNIQUE INDEX ON x (a);"));
        v.exists = false;
        assert_eq!(status(&v, String::new).0, "dropped");
    }
}
