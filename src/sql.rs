//! Quoting for the identifiers in the SQL that pg_upkeep generates (values
//! go in as parameters, or as literals made from numbers). Pure, so that
//! plans, and the statements they carry, are unit-tested without a database.

/// Always-quoted identifier: `a"b` becomes `"a""b"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for SQL shown to people (hints): `it's` becomes `'it''s'`.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A schema-qualified relation name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName { schema: schema.into(), name: name.into() }
    }

    /// `"schema"."name"`, for statements.
    pub fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

impl std::fmt::Display for QualifiedName {
    /// The form a DBA reads in reports: quoted only where needed, as
    /// `regclass` output does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let part = |s: &str| {
            let plain = !s.is_empty()
                && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if plain {
                s.to_string()
            } else {
                ident(s)
            }
        };
        write!(f, "{}.{}", part(&self.schema), part(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal(r#""O'Brien"."x""#), r#"'"O''Brien"."x"'"#);
    }

    #[test]
    fn quotes_hostile_names() {
        assert_eq!(ident(r#"a"; DROP TABLE b; --"#), r#""a""; DROP TABLE b; --""#);
        let q = QualifiedName::new("My Schema", "nav\"history");
        assert_eq!(q.quoted(), r#""My Schema"."nav""history""#);
        assert_eq!(q.to_string(), r#""My Schema"."nav""history""#);
        assert_eq!(QualifiedName::new("public", "nav_history").to_string(), "public.nav_history");
    }
}
