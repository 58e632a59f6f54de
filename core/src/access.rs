//! Who may read and change a table's rows: its grants (table and column
//! level), whether row-level security is enabled and forced, and its row
//! security policies. Pure Rust: facts modules read these rules, plans
//! carry them onto what pg_upkeep creates and keep them in line.
//!
//! The rule that holds: through a relation pg_upkeep created for a table
//! (a partition, `<parent>_archive` and the partitions moved into it, a
//! row archive table) no role reads or changes rows it could not read or
//! change through the table itself. So a new relation gets the table's
//! rules, all of them, not only its grants: a partition that carried the
//! grants without the row security would show every tenant's rows to a
//! role the policies limit. Column grants stay column grants. When the
//! table's rules change, the next run brings those relations back in line.

use crate::actions::Step;
use crate::sql::{ident, QualifiedName};

/// One privilege, on the table or on one column; `grantee` None is PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
    pub column: Option<String>,
}

/// One row security policy, its expressions as `pg_get_expr` prints them
/// (with `search_path = pg_catalog`, so every name outside it is qualified).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowPolicy {
    pub name: String,
    pub permissive: bool,
    /// pg_policy.polcmd: `r`, `a`, `w`, `d` or `*`.
    pub command: String,
    /// Role names, sorted; an empty name is PUBLIC.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
}

/// All the rules of one relation, other than what its owner has by owning it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub grants: Vec<Grant>,
    pub row_security: bool,
    pub forced: bool,
    pub policies: Vec<RowPolicy>,
}

fn role(name: &Option<String>) -> String {
    name.as_deref().map_or_else(|| "PUBLIC".to_string(), ident)
}

fn command(polcmd: &str) -> &'static str {
    match polcmd {
        "r" => "SELECT",
        "a" => "INSERT",
        "w" => "UPDATE",
        "d" => "DELETE",
        _ => "ALL",
    }
}

impl AccessRules {
    /// The same rules in one order, so that two relations compare equal
    /// when they grant the same, whatever order the catalogs list it in.
    pub fn normalized(mut self) -> Self {
        self.grants.sort();
        self.grants.dedup();
        for p in &mut self.policies {
            p.roles.sort();
        }
        self.policies.sort();
        self
    }

    /// The statements that give `table`, new or stripped of its own rules
    /// (see `replace_steps`), these rules.
    pub fn apply_steps(&self, table: &QualifiedName) -> Vec<Step> {
        let t = table.quoted();
        let mut steps = Vec::new();
        if self.row_security {
            steps.push(Step::new(format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")));
        }
        if self.forced {
            steps.push(Step::new(format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY")));
        }
        for p in &self.policies {
            let roles: Vec<String> =
                p.roles.iter().map(|r| if r.is_empty() { "PUBLIC".to_string() } else { ident(r) }).collect();
            let mut sql = format!(
                "CREATE POLICY {} ON {t} AS {} FOR {} TO {}",
                ident(&p.name),
                if p.permissive { "PERMISSIVE" } else { "RESTRICTIVE" },
                command(&p.command),
                roles.join(", ")
            );
            if let Some(u) = &p.using {
                sql.push_str(&format!(" USING ({u})"));
            }
            if let Some(c) = &p.check {
                sql.push_str(&format!(" WITH CHECK ({c})"));
            }
            steps.push(Step::new(sql));
        }
        for g in &self.grants {
            let columns = g.column.as_deref().map(|c| format!(" ({})", ident(c))).unwrap_or_default();
            let option = if g.grantable { " WITH GRANT OPTION" } else { "" };
            steps.push(Step::new(format!(
                "GRANT {}{columns} ON TABLE {t} TO {}{option}",
                g.privilege,
                role(&g.grantee)
            )));
        }
        steps
    }

    /// The statements that turn `table`'s rules (`self`) into `wanted`, in
    /// one transaction: everything it grants is revoked (column grants
    /// with the table's; CASCADE for what grantees passed on), its policies
    /// dropped, row security set as wanted, then `wanted` applied. Nobody
    /// ever sees more than either set allows.
    pub fn replace_steps(&self, wanted: &AccessRules, table: &QualifiedName) -> Vec<Step> {
        let t = table.quoted();
        let mut grantees: Vec<&Option<String>> = self.grants.iter().map(|g| &g.grantee).collect();
        grantees.sort();
        grantees.dedup();
        let mut steps: Vec<Step> = grantees
            .into_iter()
            .map(|g| Step::new(format!("REVOKE ALL ON TABLE {t} FROM {} CASCADE", role(g))))
            .collect();
        steps.extend(self.policies.iter().map(|p| Step::new(format!("DROP POLICY {} ON {t}", ident(&p.name)))));
        if self.forced && !wanted.forced {
            steps.push(Step::new(format!("ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY")));
        }
        if self.row_security && !wanted.row_security {
            steps.push(Step::new(format!("ALTER TABLE {t} DISABLE ROW LEVEL SECURITY")));
        }
        steps.extend(
            AccessRules {
                row_security: wanted.row_security && !self.row_security,
                forced: wanted.forced && !self.forced,
                ..wanted.clone()
            }
            .apply_steps(table),
        );
        steps
    }
}

/// A relation whose rules drifted from those of the table it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub relation: QualifiedName,
    pub current: AccessRules,
}

/// The relations (with their rules) whose rules differ from `wanted`.
pub fn drifted(wanted: &AccessRules, relations: Vec<(QualifiedName, AccessRules)>) -> Vec<Drift> {
    let wanted = wanted.clone().normalized();
    relations
        .into_iter()
        .filter_map(|(relation, rules)| {
            let current = rules.normalized();
            (current != wanted).then_some(Drift { relation, current })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(grantee: Option<&str>, privilege: &str, column: Option<&str>) -> Grant {
        Grant {
            grantee: grantee.map(str::to_string),
            privilege: privilege.into(),
            grantable: false,
            column: column.map(str::to_string),
        }
    }

    fn tenants() -> AccessRules {
        AccessRules {
            grants: vec![grant(Some("Reader"), "SELECT", None), grant(None, "SELECT", Some("fund id"))],
            row_security: true,
            forced: true,
            policies: vec![
                RowPolicy {
                    name: "own tenant".into(),
                    permissive: true,
                    command: "r".into(),
                    roles: vec!["Reader".into(), String::new()],
                    using: Some("(tenant = CURRENT_USER)".into()),
                    check: None,
                },
                RowPolicy {
                    name: "no_closed".into(),
                    permissive: false,
                    command: "w".into(),
                    roles: vec!["app".into()],
                    using: Some("(NOT closed)".into()),
                    check: Some("(amount > (0)::numeric)".into()),
                },
            ],
        }
    }

    fn table() -> QualifiedName {
        QualifiedName::new("app", "nav_p2026_11")
    }

    #[test]
    fn a_new_relation_gets_row_security_policies_and_grants_column_grants_as_column_grants() {
        let s: Vec<String> = tenants().apply_steps(&table()).into_iter().map(|s| s.sql).collect();
        assert_eq!(
            s,
            [
                r#"ALTER TABLE "app"."nav_p2026_11" ENABLE ROW LEVEL SECURITY"#,
                r#"ALTER TABLE "app"."nav_p2026_11" FORCE ROW LEVEL SECURITY"#,
                r#"CREATE POLICY "own tenant" ON "app"."nav_p2026_11" AS PERMISSIVE FOR SELECT TO "Reader", PUBLIC USING ((tenant = CURRENT_USER))"#,
                r#"CREATE POLICY "no_closed" ON "app"."nav_p2026_11" AS RESTRICTIVE FOR UPDATE TO "app" USING ((NOT closed)) WITH CHECK ((amount > (0)::numeric))"#,
                r#"GRANT SELECT ON TABLE "app"."nav_p2026_11" TO "Reader""#,
                r#"GRANT SELECT ("fund id") ON TABLE "app"."nav_p2026_11" TO PUBLIC"#,
            ]
        );
    }

    #[test]
    fn without_row_security_only_grants_are_carried() {
        let rules = AccessRules { grants: vec![grant(Some("bi"), "SELECT", None)], ..AccessRules::default() };
        let s: Vec<String> = rules.apply_steps(&table()).into_iter().map(|s| s.sql).collect();
        assert_eq!(s, [r#"GRANT SELECT ON TABLE "app"."nav_p2026_11" TO "bi""#]);
    }

    #[test]
    fn order_does_not_make_a_drift_but_any_difference_does() {
        let mut shuffled = tenants();
        shuffled.grants.reverse();
        shuffled.policies.reverse();
        shuffled.policies[1].roles.reverse();
        let t = table();
        assert!(drifted(&tenants(), vec![(t.clone(), shuffled.clone())]).is_empty());
        let changes: [fn(&mut AccessRules); 5] = [
            |r| r.forced = false,
            |r| r.policies[0].using = Some("true".into()),
            |r| r.grants.iter_mut().for_each(|g| g.column = None),
            |r| r.grants.push(grant(Some("x"), "DELETE", None)),
            |r| {
                r.policies.pop();
            },
        ];
        for change in changes {
            let mut r = shuffled.clone();
            change(&mut r);
            assert_eq!(drifted(&tenants(), vec![(t.clone(), r)]).len(), 1);
        }
    }

    #[test]
    fn replacing_revokes_and_drops_first_then_applies() {
        let plain = AccessRules {
            grants: vec![grant(Some("Reader"), "SELECT", None), grant(Some("Reader"), "INSERT", None)],
            ..AccessRules::default()
        };
        let s: Vec<String> = plain.replace_steps(&tenants(), &table()).into_iter().map(|s| s.sql).collect();
        assert_eq!(s[0], r#"REVOKE ALL ON TABLE "app"."nav_p2026_11" FROM "Reader" CASCADE"#);
        assert_eq!(s.iter().filter(|x| x.starts_with("REVOKE")).count(), 1, "one REVOKE per grantee");
        assert_eq!(s[1], r#"ALTER TABLE "app"."nav_p2026_11" ENABLE ROW LEVEL SECURITY"#);
        assert!(s.last().unwrap().starts_with("GRANT SELECT (\"fund id\")"));
        // Back: the policies go, row security is switched off, the grants come back.
        let s: Vec<String> = tenants().replace_steps(&plain, &table()).into_iter().map(|s| s.sql).collect();
        assert!(s.contains(&r#"DROP POLICY "own tenant" ON "app"."nav_p2026_11""#.to_string()));
        assert!(s.contains(&r#"REVOKE ALL ON TABLE "app"."nav_p2026_11" FROM PUBLIC CASCADE"#.to_string()));
        let pos = |p: &str| s.iter().position(|x| x.contains(p)).unwrap();
        assert!(pos("NO FORCE") < pos("DISABLE ROW LEVEL SECURITY"));
        assert!(pos("DISABLE ROW LEVEL SECURITY") < pos("GRANT INSERT"));
        assert!(!s.iter().any(|x| x.contains("ENABLE ROW LEVEL")));
    }
}
