//! Where archived data may go. Pure Rust: the catalog answers are read
//! with each policy's facts, and these rules run when a policy is
//! registered (an ERROR) and again before every move (a failed move).
//!
//! Never a place that `pg_dump` leaves out or that belongs to the system
//! (`pg_catalog`, `pg_toast`, `information_schema`, any `pg_*` schema,
//! pg_upkeep's own `upkeep`, the `pg_global` tablespace), whoever asks,
//! superusers included: data moved there would silently vanish from
//! backups. Privileges are checked before anything about the target is
//! looked at, and "does not exist" and "may not" are one answer, so that
//! naming another role's schema or table tells the caller nothing new.

use crate::problem::Problem;
use crate::sql::ident;

/// What the catalogs say about a target, for the table's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Missing, or the owner may not put tables there.
    Refused,
    Allowed,
}

impl Access {
    /// From a catalog answer: NULL (no such object) or the privilege.
    pub fn from_catalog(allowed: Option<bool>) -> Access {
        if allowed == Some(true) {
            Access::Allowed
        } else {
            Access::Refused
        }
    }
}

fn refused(message: String, hint: String) -> Result<(), Problem> {
    Err(Problem { message, hint })
}

/// Schemas that hold the system's objects or pg_upkeep's, or that pg_dump skips.
pub fn is_system_schema(name: &str) -> bool {
    name.starts_with("pg_") || name == "information_schema" || name == "upkeep"
}

/// A schema that archives of `source` (owned by `owner`) go to.
pub fn check_schema(schema: &str, owner: &str, source: &str, access: Access) -> Result<(), Problem> {
    if is_system_schema(schema) {
        return refused(
            format!("schema {} cannot hold the archive of {source}: it belongs to the system or to pg_upkeep", ident(schema)),
            "pg_dump leaves such schemas out, so archived rows would vanish from backups: archive to a schema of your own, e.g. CREATE SCHEMA archive;".into(),
        );
    }
    if access == Access::Refused {
        return refused(
            format!(
                "schema {} does not exist, or role {} (the owner of {source}) may not create tables in it",
                ident(schema),
                ident(owner)
            ),
            format!(
                "Name a schema where the owner may create tables: CREATE SCHEMA {s} AUTHORIZATION {o}; or GRANT CREATE, USAGE ON SCHEMA {s} TO {o};",
                s = ident(schema),
                o = ident(owner)
            ),
        );
    }
    Ok(())
}

/// A tablespace that partitions of `source` move to.
pub fn check_tablespace(tablespace: &str, owner: &str, source: &str, access: Access) -> Result<(), Problem> {
    if tablespace == "pg_global" {
        return refused(
            format!("tablespace pg_global cannot hold the archive of {source}: it is for shared system catalogs"),
            "Archive to a tablespace of your own: CREATE TABLESPACE cold LOCATION '...';".into(),
        );
    }
    if access == Access::Refused {
        return refused(
            format!(
                "tablespace {} does not exist, or role {} (the owner of {source}) may not create tables in it",
                ident(tablespace),
                ident(owner)
            ),
            format!(
                "Name a tablespace the owner may use (see \\db): GRANT CREATE ON TABLESPACE {} TO {};",
                ident(tablespace),
                ident(owner)
            ),
        );
    }
    Ok(())
}

/// An archive table that exists already: pg_upkeep writes it as the
/// source's owner, so it must be that role's (checked before its columns
/// are compared, which would tell them).
pub fn check_table_owner(archive: &str, owner: &str, source: &str, owned: bool) -> Result<(), Problem> {
    if owned {
        return Ok(());
    }
    refused(
        format!("archive table {archive} is not owned by role {} (the owner of {source})", ident(owner)),
        "Name a new table (it is created LIKE the source, owned by the source's owner) or one that owner owns.".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_schemas_are_refused_whoever_may_create_there() {
        for s in ["pg_catalog", "pg_toast", "pg_temp_3", "pg_toast_temp_1", "information_schema", "upkeep"] {
            let e = check_schema(s, "postgres", "public.t", Access::Allowed).unwrap_err();
            assert!(e.message.contains(&ident(s)) && e.hint.contains("pg_dump"), "{s}: {e:?}");
        }
        assert!(check_schema("archive", "app", "public.t", Access::Allowed).is_ok());
        assert!(check_schema("Pg_Catalog", "app", "public.t", Access::Allowed).is_ok(), "a user schema of that name");
    }

    #[test]
    fn missing_and_forbidden_targets_get_one_answer() {
        let e = check_schema("vault", "app", "public.t", Access::Refused).unwrap_err();
        assert_eq!(
            e.message,
            r#"schema "vault" does not exist, or role "app" (the owner of public.t) may not create tables in it"#
        );
        assert!(e.hint.contains(r#"GRANT CREATE, USAGE ON SCHEMA "vault" TO "app""#));
        let e = check_tablespace("cold", "app", "public.t", Access::Refused).unwrap_err();
        assert!(e.message.starts_with(r#"tablespace "cold" does not exist, or role "app""#), "{e:?}");
        assert!(check_tablespace("pg_global", "postgres", "public.t", Access::Allowed).is_err());
        assert!(check_tablespace("pg_default", "app", "public.t", Access::Allowed).is_ok());
    }

    #[test]
    fn an_existing_archive_must_be_the_owners() {
        assert!(check_table_owner("x.a", "app", "public.t", true).is_ok());
        let e = check_table_owner("x.a", "app", "public.t", false).unwrap_err();
        assert!(e.message.contains("not owned by role \"app\""), "{e:?}");
    }

    #[test]
    fn access_is_refused_unless_the_catalog_says_yes() {
        assert_eq!(Access::from_catalog(None), Access::Refused);
        assert_eq!(Access::from_catalog(Some(false)), Access::Refused);
        assert_eq!(Access::from_catalog(Some(true)), Access::Allowed);
    }
}
