//! Reading who may read and change tables' rows from the catalogs; the
//! rules themselves, and how they are carried over, are `upkeep_core::access`.

use crate::sql::QualifiedName;
pub use upkeep_core::access::*;

/// The rules of each of `tables`, and those of the relations made for
/// them (`made`: the position of the table served, the relation's OID and
/// name) that drifted from their table's: one read for all.
pub fn read_with_drift(
    client: &pgrx::spi::SpiClient<'_>,
    tables: &[pgrx::pg_sys::Oid],
    made: Vec<(usize, pgrx::pg_sys::Oid, QualifiedName)>,
) -> Result<Vec<(AccessRules, Vec<Drift>)>, String> {
    let all: Vec<pgrx::pg_sys::Oid> = tables.iter().copied().chain(made.iter().map(|m| m.1)).collect();
    let mut rules = read(client, &all)?;
    let mut relations: Vec<Vec<(QualifiedName, AccessRules)>> = vec![Vec::new(); tables.len()];
    for (i, oid, name) in made {
        relations[i].push((name, rules.remove(&oid.to_u32()).unwrap_or_default()));
    }
    Ok(tables
        .iter()
        .zip(relations)
        .map(|(table, rels)| {
            let wanted = rules.get(&table.to_u32()).cloned().unwrap_or_default();
            let drift = drifted(&wanted, rels);
            (wanted, drift)
        })
        .collect())
}

/// The rules of the given relations (by OID), in three catalog queries
/// whatever their number. A relation missing from the catalogs has none.
fn read(
    client: &pgrx::spi::SpiClient<'_>,
    oids: &[pgrx::pg_sys::Oid],
) -> Result<std::collections::BTreeMap<u32, AccessRules>, String> {
    use crate::statements::{self, param};
    use pgrx::pg_sys::BuiltinOid;
    let err = |e: pgrx::spi::SpiError| e.to_string();
    let mut out: std::collections::BTreeMap<u32, AccessRules> =
        oids.iter().map(|o| (o.to_u32(), AccessRules::default())).collect();
    if oids.is_empty() {
        return Ok(out);
    }
    let types = [param(BuiltinOid::OIDARRAYOID)];
    statements::lookup(client, FLAGS_SQL, &types, &[oids.to_vec().into()], |rows| {
        for row in rows {
            let rules = out.entry(row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32).or_default();
            rules.row_security = row.get::<bool>(2).map_err(err)?.unwrap_or(false);
            rules.forced = row.get::<bool>(3).map_err(err)?.unwrap_or(false);
        }
        Ok(())
    })?;
    statements::lookup(client, GRANTS_SQL, &types, &[oids.to_vec().into()], |rows| {
        for row in rows {
            let rules = out.entry(row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32).or_default();
            rules.grants.push(Grant {
                grantee: row.get::<String>(2).map_err(err)?,
                privilege: row.get::<String>(3).map_err(err)?.unwrap_or_default(),
                grantable: row.get::<bool>(4).map_err(err)?.unwrap_or(false),
                column: row.get::<String>(5).map_err(err)?,
            });
        }
        Ok(())
    })?;
    statements::lookup(client, POLICIES_SQL, &types, &[oids.to_vec().into()], |rows| {
        for row in rows {
            let rules = out.entry(row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32).or_default();
            rules.policies.push(RowPolicy {
                name: row.get::<String>(2).map_err(err)?.unwrap_or_default(),
                permissive: row.get::<bool>(3).map_err(err)?.unwrap_or(true),
                command: row.get::<String>(4).map_err(err)?.unwrap_or_default(),
                roles: row.get::<Vec<String>>(5).map_err(err)?.unwrap_or_default(),
                using: row.get::<String>(6).map_err(err)?,
                check: row.get::<String>(7).map_err(err)?,
            });
        }
        Ok(())
    })?;
    Ok(out)
}

const FLAGS_SQL: &str =
    "SELECT c.oid::int8, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c WHERE c.oid = ANY ($1)";

/// Table and column privileges, but the owner's own (they come with
/// ownership); a NULL grantee is PUBLIC.
const GRANTS_SQL: &str = "\
SELECT c.oid::int8, CASE WHEN g.grantee <> 0 THEN pg_get_userbyid(g.grantee)::text END, g.privilege_type::text, \
       g.is_grantable, NULL::text \
  FROM pg_class c, aclexplode(c.relacl) g \
 WHERE c.oid = ANY ($1) AND g.grantee <> c.relowner \
UNION ALL \
SELECT c.oid::int8, CASE WHEN g.grantee <> 0 THEN pg_get_userbyid(g.grantee)::text END, g.privilege_type::text, \
       g.is_grantable, a.attname::text \
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped, \
       aclexplode(a.attacl) g \
 WHERE c.oid = ANY ($1) AND g.grantee <> c.relowner";

/// Row security policies; expressions deparsed under the caller's pinned
/// search_path, so that they mean the same wherever they are re-created.
const POLICIES_SQL: &str = "\
SELECT p.polrelid::int8, p.polname::text, p.polpermissive, p.polcmd::text, \
       ARRAY(SELECT CASE WHEN r <> 0 THEN pg_get_userbyid(r)::text ELSE '' END FROM unnest(p.polroles) r), \
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
  FROM pg_policy p WHERE p.polrelid = ANY ($1)";
