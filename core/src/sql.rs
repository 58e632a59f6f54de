//! Quoting and naming for the identifiers in the SQL that pg_upkeep
//! generates (values go in as parameters, or as literals made from
//! numbers). Pure, so that plans, and the statements they carry, are
//! unit-tested without a database.

/// Always-quoted identifier: `a"b` becomes `"a""b"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for SQL shown to people (hints): `it's` becomes `'it''s'`.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// A stable 32-bit FNV-1a hash, for shortened names.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// `<parent>_<suffix>`, shortened to 63 bytes when needed: the parent part is
/// cut on a character boundary and followed by a hash of the full parent
/// name, so two long parents that share a prefix still get distinct names.
/// A long suffix too (an index on many columns) cuts the whole name, which
/// then ends in a hash of all of it.
pub fn shortened_name(parent: &str, suffix: &str) -> String {
    let full = format!("{parent}_{suffix}");
    if full.len() <= MAX_NAME_BYTES {
        return full;
    }
    let tail = format!("_{:08x}_{suffix}", fnv1a(parent));
    let (head, tail) = if tail.len() <= MAX_NAME_BYTES / 2 {
        (parent, tail)
    } else {
        (full.as_str(), format!("_{:08x}", fnv1a(&full)))
    };
    let mut cut = MAX_NAME_BYTES - tail.len();
    while !head.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &head[..cut])
}

/// `CREATE TABLE`, or `CREATE UNLOGGED TABLE` for what serves an unlogged
/// table: its partitions and archives stay unlogged, as the DBA chose.
pub fn create_table(unlogged: bool) -> &'static str {
    if unlogged {
        "CREATE UNLOGGED TABLE"
    } else {
        "CREATE TABLE"
    }
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

    #[test]
    fn suffixes_too_long_to_keep_whole_still_give_distinct_names() {
        let a = "a".repeat(60);
        let b = format!("{}b", "a".repeat(59));
        let u = "é".repeat(40);
        // A suffix too long to keep whole: names differing only in it, or
        // only in the parent, stay distinct and within 63 bytes.
        let cols = |last: &str| format!("{}_{last}_idx", "customer_reference_number".repeat(2));
        let names = [shortened_name(&a, &cols("x")), shortened_name(&a, &cols("y")), shortened_name(&b, &cols("x"))];
        assert!(names.iter().all(|n| n.len() <= MAX_NAME_BYTES && n.starts_with("aaaa")), "{names:?}");
        assert_ne!(names[0], names[1]);
        assert_ne!(names[0], names[2]);
        let nu = shortened_name(&format!("x{u}"), &cols("x"));
        assert!(nu.len() == MAX_NAME_BYTES - 1 && nu.starts_with("xéé"), "{nu}: cut before a two-byte character");
    }
}
