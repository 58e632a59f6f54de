//! Row archiving for plain tables: what a policy needs, whether it still
//! fits its tables, and the statements that move old rows. Pure Rust.
//!
//! Each batch is one statement: a DELETE of up to `batch_size` old rows
//! (locked with SKIP LOCKED, so rows an application holds are left for a
//! later run) whose RETURNING list feeds the INSERT into the archive. The
//! rows inserted are exactly the rows deleted, whatever commits in between;
//! the statement is atomic, so a crash loses or doubles nothing.

use crate::access::{AccessRules, Drift};
use crate::actions::{Action, ActionKind, Step};
use crate::archive_target::{self as target, Access};
use crate::problem::Problem;
use crate::sql::{create_table, ident, shortened_name, QualifiedName};

/// One column of the source or the archive table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// As format_type() prints it.
    pub type_name: String,
    pub generated: bool,
    pub not_null: bool,
    pub has_default: bool,
}

/// A foreign key that points at the source and forbids deleting rows it
/// references (NO ACTION or RESTRICT): such rows are held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub constraint: String,
    /// The referencing table.
    pub table: QualifiedName,
    /// (referencing column, source column) pairs.
    pub columns: Vec<(String, String)>,
}

impl Reference {
    /// SQL true while the source row `s` is referenced.
    fn referenced(&self) -> String {
        let on = self
            .columns
            .iter()
            .map(|(from, to)| format!("r.{} = s.{}", ident(from), ident(to)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("EXISTS (SELECT 1 FROM {} r WHERE {on})", self.table.quoted())
    }
}

/// A row archive policy with what its tables look like now.
#[derive(Debug, Clone)]
pub struct RowFacts {
    pub job_id: i64,
    pub source: QualifiedName,
    /// Whether the source still exists; `relkind` is its pg_class.relkind.
    pub exists: bool,
    pub relkind: String,
    /// Citus distributes (or replicates) the source.
    pub distributed: bool,
    pub owner: String,
    /// The source is UNLOGGED: so is the archive pg_upkeep creates for it.
    pub unlogged: bool,
    pub time_column: String,
    /// The time column's type, None when the column is gone.
    pub time_type: Option<String>,
    /// `now() - older_than` as timestamptz text, read with the facts.
    pub cutoff: String,
    pub batch_size: i64,
    /// The archive table as registered; None: `<source>_archive` beside it.
    pub archive: Option<QualifiedName>,
    /// Whether foreign keys that cascade, or set NULL or a default, on
    /// DELETE point at the source: deleting its rows would change others.
    pub cascading_references: bool,
    /// Foreign keys whose referenced rows must stay (NO ACTION, RESTRICT).
    pub references: Vec<Reference>,
    pub columns: Vec<Column>,
    /// Whether the owner may use the archive's schema (create the table
    /// there, or write the one that exists).
    pub archive_target: Access,
    /// For an archive table that exists: whether the owner owns it.
    pub archive_owned: Option<bool>,
    /// Who may read and change the source's rows: what the archive gets.
    pub access: AccessRules,
    /// The archive's own rules, when they are not the source's.
    pub archive_drift: Option<Drift>,
    /// The archive table's relkind and columns, None when it does not exist.
    pub archive_relkind: Option<String>,
    pub archive_columns: Vec<Column>,
}

fn problem(message: String, hint: impl Into<String>) -> Problem {
    Problem::new(message, hint)
}

pub const TIME_TYPES: [&str; 3] = ["date", "timestamp without time zone", "timestamp with time zone"];

impl RowFacts {
    /// Where the rows go.
    pub fn archive_table(&self) -> QualifiedName {
        self.archive.clone().unwrap_or_else(|| {
            QualifiedName::new(self.source.schema.clone(), shortened_name(&self.source.name, "archive"))
        })
    }

    /// The archive's column of that name.
    fn archive_column(&self, name: &str) -> Option<&Column> {
        self.archive_columns.iter().find(|c| c.name == name)
    }

    /// Source columns the archive lacks (added to the archive before rows
    /// move; at registration an existing archive lacking them is refused).
    pub fn missing_in_archive(&self) -> Vec<&Column> {
        if self.archive_relkind.is_none() {
            return Vec::new();
        }
        self.columns.iter().filter(|c| self.archive_column(&c.name).is_none()).collect()
    }

    /// The rules every run applies, in one place: the source is a plain
    /// table with that time column, the archive is another table whose
    /// columns can take the source's rows.
    pub fn validate(&self) -> Result<(), Problem> {
        let source = self.source.to_string();
        if !self.exists {
            return Err(problem(
                format!("table {source} of archive job {} does not exist", self.job_id),
                "It was dropped or renamed: SELECT upkeep.unmanage_archive(...) the old entry, and manage the table again.",
            ));
        }
        if self.distributed {
            return Err(crate::citus::refusal(&source));
        }
        match self.relkind.as_str() {
            "r" => {}
            "p" => {
                return Err(problem(
                    format!("{source} is partitioned; pg_upkeep archives its partitions, not its rows"),
                    "Use upkeep.manage_partitions(..., retention => ...) for partitioned tables: whole partitions leave, which costs no row moves.",
                ))
            }
            _ => {
                return Err(problem(
                    format!("{source} is not a table"),
                    "Row archiving moves rows of plain tables: give a table (see \\dt).",
                ))
            }
        }
        let Some(time_type) = &self.time_type else {
            return Err(problem(
                format!("column \"{}\" of {source} does not exist", self.time_column),
                "Name the date, timestamp or timestamptz column whose age decides what is archived (see \\d of the table).",
            ));
        };
        if !TIME_TYPES.contains(&time_type.as_str()) {
            return Err(problem(
                format!("column \"{}\" of {source} is {time_type}, not a date or time", self.time_column),
                "Row archiving needs a date, timestamp or timestamptz column to tell old rows from new ones.",
            ));
        }
        let archive = self.archive_table();
        if archive == self.source {
            return Err(problem(
                format!("{source} cannot be its own archive"),
                "Leave archive_table NULL for <table>_archive, or name another table.",
            ));
        }
        target::check_schema(&archive.schema, &self.owner, &source, self.archive_target)?;
        if let Some(owned) = self.archive_owned {
            target::check_table_owner(&archive.to_string(), &self.owner, &source, owned)?;
        }
        if self.cascading_references {
            return Err(problem(
                format!("foreign keys with ON DELETE CASCADE, SET NULL or SET DEFAULT point at {source}"),
                "Moving rows out would change the referencing tables too. Archive those first, or change the foreign keys to NO ACTION/RESTRICT.",
            ));
        }
        match self.archive_relkind.as_deref() {
            None | Some("r") | Some("p") => {}
            Some(_) => {
                return Err(problem(
                    format!("archive {archive} is not a table"),
                    "Name a table, or a name that does not exist yet (it is then created LIKE the source).",
                ))
            }
        }
        for c in &self.columns {
            if let Some(a) = self.archive_column(&c.name) {
                if a.type_name != c.type_name {
                    return Err(problem(
                        format!(
                            "column \"{}\" is {} in {source} but {} in archive {archive}",
                            c.name, c.type_name, a.type_name
                        ),
                        format!(
                            "Make the types match: ALTER TABLE {} ALTER COLUMN {} TYPE {};",
                            archive.quoted(),
                            ident(&c.name),
                            c.type_name
                        ),
                    ));
                }
            }
        }
        for a in &self.archive_columns {
            if a.not_null && !a.has_default && !a.generated && !self.columns.iter().any(|c| c.name == a.name) {
                return Err(problem(
                    format!("archive {archive} has a NOT NULL column \"{}\" that {source} lacks", a.name),
                    format!(
                        "Rows from {source} would have no value for it: ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL;",
                        archive.quoted(),
                        ident(&a.name)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `f`'s source is referenced by the source of another policy
/// among `others`: that one's moves free rows `f` holds back, so they go
/// first.
pub fn waits_for<'a>(f: &RowFacts, mut others: impl Iterator<Item = &'a RowFacts>) -> bool {
    others.any(|a| a.job_id != f.job_id && f.references.iter().any(|r| r.table == a.source))
}

/// The policies in the order their moves run: a table that references
/// another managed table before it, so that the rows it frees move in the
/// same cycle. Tables that reference each other keep the given order.
pub fn in_reference_order(mut rest: Vec<RowFacts>) -> Vec<RowFacts> {
    let mut out = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let next = (0..rest.len()).find(|&i| !waits_for(&rest[i], rest.iter())).unwrap_or(0);
        out.push(rest.remove(next));
    }
    out
}

/// The batch statement: moves up to $2 rows older than $1 (a timestamptz),
/// scanning the source from row position $3 on; returns how many it moved
/// and the position of the last, where the next batch starts (so no batch
/// reads again what earlier ones emptied). Rows behind it that were locked,
/// or written there meanwhile, are for the next run. Rows another table
/// still references through a foreign key that forbids their deletion are
/// held back (they would fail the whole batch), and move once free.
/// Columns the archive generates itself are left to it.
pub fn batch_sql(f: &RowFacts) -> String {
    let source = f.source.quoted();
    let archive = f.archive_table().quoted();
    // The archive generates a column itself where it has it as generated,
    // and when it is still to be created LIKE the source.
    let generated_there = |c: &Column| match f.archive_relkind {
        None => c.generated,
        Some(_) => f.archive_column(&c.name).is_some_and(|a| a.generated),
    };
    let cols = f.columns.iter().filter(|c| !generated_there(c)).map(|c| ident(&c.name)).collect::<Vec<_>>().join(", ");
    let free: String = f.references.iter().map(|r| format!(" AND NOT {}", r.referenced())).collect();
    format!(
        "WITH moved AS (DELETE FROM ONLY {source} WHERE ctid = ANY (ARRAY(\
         SELECT s.ctid FROM ONLY {source} s WHERE s.ctid >= $3::tid AND s.{} < $1::timestamptz{free} \
         LIMIT $2::int FOR UPDATE OF s SKIP LOCKED)) \
         RETURNING {cols}, ctid AS {POSITION}), \
         copied AS (INSERT INTO {archive} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM moved) \
         SELECT count(*), coalesce(max({POSITION}), $3::tid)::text FROM moved",
        ident(&f.time_column)
    )
}

/// The name the batch statement gives a moved row's position (a name no
/// table column is likely to have: the RETURNING list names every column).
const POSITION: &str = "pg_upkeep_row_position";

/// The action that archives a policy's old rows: create the archive when
/// missing (LIKE the source INCLUDING ALL, so as the owner it belongs to
/// the owner), add columns the source gained since, then the batches.
pub fn plan(f: &RowFacts) -> Action {
    let source = f.source.quoted();
    let archive = f.archive_table();
    let mut steps = Vec::new();
    if f.archive_relkind.is_none() {
        steps.push(Step::new(format!(
            "{} {} (LIKE {source} INCLUDING ALL)",
            create_table(f.unlogged),
            archive.quoted()
        )));
        steps.extend(f.access.apply_steps(&archive));
    }
    if let Some(d) = &f.archive_drift {
        steps.extend(d.current.replace_steps(&f.access, &archive));
    }
    for c in f.missing_in_archive() {
        steps.push(Step::new(format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            archive.quoted(),
            ident(&c.name),
            c.type_name
        )));
    }
    steps.push(Step::batches(
        batch_sql(f),
        vec![f.cutoff.clone(), f.batch_size.to_string(), "(0,0)".to_string()],
        "rows archived",
        f.batch_size,
    ));
    Action {
        job_id: f.job_id,
        kind: ActionKind::ArchiveRows,
        target: f.source.clone(),
        detail: format!("rows with {} before {} into {archive}", f.time_column, f.cutoff),
        run_as: f.owner.clone(),
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> Column {
        Column { name: name.into(), type_name: t.into(), generated: false, not_null: false, has_default: false }
    }

    fn events() -> RowFacts {
        RowFacts {
            job_id: 9,
            source: QualifiedName::new("app", "Events"),
            exists: true,
            relkind: "r".into(),
            distributed: false,
            owner: "app".into(),
            unlogged: false,
            time_column: "at".into(),
            time_type: Some("timestamp with time zone".into()),
            cutoff: "2026-08-23 00:00:00+00".into(),
            batch_size: 500,
            archive: None,
            cascading_references: false,
            references: vec![],
            columns: vec![
                Column { not_null: true, has_default: true, ..col("id", "bigint") },
                col("at", "timestamp with time zone"),
                col("payload", "text"),
                Column { generated: true, ..col("day", "date") },
            ],
            archive_target: Access::Allowed,
            archive_owned: None,
            access: AccessRules::default(),
            archive_drift: None,
            archive_relkind: None,
            archive_columns: vec![],
        }
    }

    #[test]
    fn the_target_is_checked_before_its_shape_is_looked_at() {
        let mut f = events();
        f.archive = Some(QualifiedName::new("bob", "secret"));
        f.archive_relkind = Some("r".into());
        f.archive_columns = vec![col("at", "text")];
        f.archive_owned = Some(false);
        let e = f.validate().unwrap_err();
        assert!(e.message.contains("not owned by role \"app\""), "{e:?}");
        assert!(!e.message.contains("text"), "tells nothing of the other table's columns");
        f.archive_target = Access::Refused;
        assert!(f.validate().unwrap_err().message.starts_with(r#"schema "bob" does not exist, or role "app""#));
        f.archive = Some(QualifiedName::new("pg_catalog", "x"));
        assert!(f.validate().unwrap_err().message.contains("belongs to the system"));
        f.archive = Some(QualifiedName::new("bob", "secret"));
        f.archive_target = Access::Allowed;
        f.archive_owned = Some(true);
        assert!(f.validate().unwrap_err().message.contains("but text in archive"), "then the shape");
    }

    #[test]
    fn first_run_creates_the_archive_like_the_source_then_moves_in_batches() {
        let f = events();
        assert_eq!(f.validate(), Ok(()));
        let a = plan(&f);
        assert_eq!(a.kind, ActionKind::ArchiveRows);
        assert!(a.kind.is_long());
        assert_eq!(a.steps[0].sql, r#"CREATE TABLE "app"."Events_archive" (LIKE "app"."Events" INCLUDING ALL)"#);
        let batch = a.steps.last().unwrap();
        assert_eq!(batch.batch, Some(500));
        assert_eq!(batch.args, ["2026-08-23 00:00:00+00", "500", "(0,0)"]);
        // One statement: what is deleted is what is inserted; the archive
        // computes its generated column itself; identity values are kept.
        assert_eq!(
            batch.sql,
            r#"WITH moved AS (DELETE FROM ONLY "app"."Events" WHERE ctid = ANY (ARRAY(SELECT s.ctid FROM ONLY "app"."Events" s WHERE s.ctid >= $3::tid AND s."at" < $1::timestamptz LIMIT $2::int FOR UPDATE OF s SKIP LOCKED)) RETURNING "id", "at", "payload", ctid AS pg_upkeep_row_position), copied AS (INSERT INTO "app"."Events_archive" ("id", "at", "payload") OVERRIDING SYSTEM VALUE SELECT "id", "at", "payload" FROM moved) SELECT count(*), coalesce(max(pg_upkeep_row_position), $3::tid)::text FROM moved"#
        );
        assert!(a
            .script()
            .contains("$1 = 2026-08-23 00:00:00+00, $2 = 500, $3 = (0,0), repeated while a batch moves 500 rows"));
    }

    #[test]
    fn rows_still_referenced_are_held_back_by_each_foreign_key() {
        let mut f = events();
        f.references = vec![
            Reference {
                constraint: "tickets_event_fk".into(),
                table: QualifiedName::new("app", "Tickets"),
                columns: vec![("event id".into(), "id".into())],
            },
            Reference {
                constraint: "pair_fk".into(),
                table: QualifiedName::new("app", "pairs"),
                columns: vec![("a".into(), "id".into()), ("b".into(), "at".into())],
            },
        ];
        let sql = batch_sql(&f);
        assert!(
            sql.contains(r#"s."at" < $1::timestamptz AND NOT EXISTS (SELECT 1 FROM "app"."Tickets" r WHERE r."event id" = s."id") AND NOT EXISTS (SELECT 1 FROM "app"."pairs" r WHERE r."a" = s."id" AND r."b" = s."at") LIMIT"#),
            "{sql}"
        );
    }

    #[test]
    fn a_table_that_references_another_is_archived_before_it() {
        let policy = |job_id, name: &str, referenced_by: &[&str]| RowFacts {
            job_id,
            source: QualifiedName::new("app", name),
            references: referenced_by
                .iter()
                .map(|t| Reference {
                    constraint: format!("{t}_fk"),
                    table: QualifiedName::new("app", *t),
                    columns: vec![("x".into(), "id".into())],
                })
                .collect(),
            ..events()
        };
        // customers <- orders <- lines (lines references orders, ...), and
        // notes, which nothing references.
        let given = vec![
            policy(1, "customers", &["orders", "unmanaged"]),
            policy(2, "orders", &["lines"]),
            policy(3, "notes", &[]),
            policy(4, "lines", &[]),
        ];
        let order: Vec<i64> = in_reference_order(given.clone()).iter().map(|f| f.job_id).collect();
        assert_eq!(order, [3, 4, 2, 1]);
        assert!(waits_for(&given[0], given.iter()) && !waits_for(&given[3], given.iter()));
        // A cycle keeps the given order instead of looping.
        let cycle = vec![policy(1, "a", &["b"]), policy(2, "b", &["a"])];
        assert_eq!(in_reference_order(cycle).iter().map(|f| f.job_id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn columns_added_to_the_source_are_added_to_the_archive() {
        let mut f = events();
        f.archive_relkind = Some("r".into());
        f.archive_columns = vec![col("id", "bigint"), col("at", "timestamp with time zone"), col("day", "date")];
        assert_eq!(f.missing_in_archive().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["payload"]);
        let a = plan(&f);
        assert_eq!(a.steps[0].sql, r#"ALTER TABLE "app"."Events_archive" ADD COLUMN "payload" text"#);
        // A plain column in the archive takes the source's generated value.
        assert!(a.steps[1].sql.contains(r#"RETURNING "id", "at", "payload", "day", ctid"#), "{}", a.steps[1].sql);
    }

    #[test]
    fn tables_that_do_not_fit_are_refused_with_a_hint() {
        let check = |change: &dyn Fn(&mut RowFacts), expect: &str| {
            let mut f = events();
            change(&mut f);
            let p = f.validate().expect_err(expect);
            assert!(p.message.contains(expect), "{} does not say {expect}", p.message);
            assert!(!p.hint.is_empty());
        };
        check(&|f| f.exists = false, "does not exist");
        check(&|f| f.relkind = "p".into(), "is partitioned");
        check(&|f| f.relkind = "v".into(), "is not a table");
        check(&|f| f.time_type = None, r#"column "at" of app."Events" does not exist"#);
        check(&|f| f.time_type = Some("integer".into()), "is integer, not a date or time");
        check(&|f| f.archive = Some(QualifiedName::new("app", "Events")), "cannot be its own archive");
        check(&|f| f.cascading_references = true, "ON DELETE CASCADE");
        check(
            &|f| {
                f.archive_relkind = Some("r".into());
                f.archive_columns = vec![col("at", "date")];
            },
            "is timestamp with time zone in",
        );
        check(
            &|f| {
                f.archive_relkind = Some("r".into());
                f.archive_columns = vec![Column { not_null: true, ..col("note", "text") }];
            },
            r#"NOT NULL column "note""#,
        );
        check(&|f| f.archive_relkind = Some("v".into()), "is not a table");
    }
}
