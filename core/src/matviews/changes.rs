//! Whether a refresh saw a recorded change: the rule of SQL's
//! `upkeep.seen()`, for the decision, which reads the change records once
//! instead of once per view.

/// A row of `upkeep.changes` (of a relation): the last transaction, and
/// its command, that changed the relation from one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub xid: u64,
    pub cid: i64,
}

/// What a refresh recorded of the moment it read: a `pg_snapshot`, and
/// its own transaction (if it had an ID) and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    xmin: u64,
    xmax: u64,
    running: Vec<u64>,
    xid: Option<u64>,
    cid: i64,
}

impl Refresh {
    /// From the texts of `pg_snapshot` and `xid8`; None when the snapshot
    /// is not one.
    pub fn parse(snapshot: &str, xid: Option<&str>, cid: i64) -> Option<Refresh> {
        let mut parts = snapshot.splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        let xid = match xid {
            Some(x) => Some(x.parse().ok()?),
            None => None,
        };
        Some(Refresh { xmin, xmax, running, xid, cid })
    }

    /// Whether the refresh saw the change: made by its own transaction
    /// before its command, or committed by a transaction its snapshot
    /// sees (`pg_visible_in_snapshot`, which never counts the snapshot's
    /// own transaction).
    pub fn saw(&self, c: &Change) -> bool {
        if self.xid == Some(c.xid) {
            return c.cid < self.cid;
        }
        c.xid < self.xmin || (c.xid < self.xmax && !self.running.contains(&c.xid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(xid: u64, cid: i64) -> Change {
        Change { xid, cid }
    }

    #[test]
    fn a_snapshot_sees_what_committed_before_it() {
        let r = Refresh::parse("100:105:101,103", None, 0).unwrap();
        assert!(r.saw(&change(99, 0)));
        assert!(r.saw(&change(100, 0)), "xmin itself finished before the snapshot unless listed");
        assert!(r.saw(&change(102, 0)));
        assert!(!r.saw(&change(101, 0)), "running then");
        assert!(!r.saw(&change(103, 0)));
        assert!(r.saw(&change(104, 0)));
        assert!(!r.saw(&change(105, 0)), "started after");
        assert!(!r.saw(&change(200, 0)));
    }

    #[test]
    fn the_refreshing_transaction_counts_by_command() {
        let r = Refresh::parse("100:100:", Some("100"), 5).unwrap();
        assert!(r.saw(&change(100, 4)));
        assert!(!r.saw(&change(100, 5)));
        assert!(!r.saw(&change(100, 9)));
        assert!(r.saw(&change(99, 9)));
    }

    #[test]
    fn texts_that_are_not_snapshots_are_refused() {
        assert_eq!(Refresh::parse("100:105", None, 0), None);
        assert_eq!(Refresh::parse("x:105:", None, 0), None);
        assert_eq!(Refresh::parse("100:105:1,x", None, 0), None);
        assert_eq!(Refresh::parse("100:105:", Some("y"), 0), None);
        assert_eq!(
            Refresh::parse("9007199254740993:9007199254740995:9007199254740994", None, 0).map(|r| r.running),
            Some(vec![9007199254740994])
        );
    }
}
