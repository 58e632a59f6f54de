//! Archive moves: old data leaves the live tables. For partitioned tables,
//! partitions wholly older than the policy's retention go where its archive
//! mode says (`partitions.rs`).

pub mod partitions;

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveMode {
    /// Detach, then attach to `<parent>_archive` (same shape), still queryable.
    ArchiveTable,
    /// Detach and move to another schema.
    Schema(String),
    /// Detach and move to a cold tablespace.
    Tablespace(String),
    /// Detach only.
    Detach,
    /// Drop the partition.
    Drop,
}

impl FromStr for ArchiveMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let named = |rest: &str| {
            let rest = rest.trim();
            if rest.is_empty() {
                Err(())
            } else {
                Ok(rest.to_string())
            }
        };
        match s.trim() {
            "archive_table" => Ok(ArchiveMode::ArchiveTable),
            "detach" => Ok(ArchiveMode::Detach),
            "drop" => Ok(ArchiveMode::Drop),
            other => match other.split_once(':') {
                Some(("schema", name)) => named(name).map(ArchiveMode::Schema),
                Some(("tablespace", name)) => named(name).map(ArchiveMode::Tablespace),
                _ => Err(()),
            },
        }
    }
}

impl std::fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveMode::ArchiveTable => f.write_str("archive_table"),
            ArchiveMode::Schema(s) => write!(f, "schema:{s}"),
            ArchiveMode::Tablespace(t) => write!(f, "tablespace:{t}"),
            ArchiveMode::Detach => f.write_str("detach"),
            ArchiveMode::Drop => f.write_str("drop"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("archive_table".parse(), Ok(ArchiveMode::ArchiveTable));
        assert_eq!("schema:cold".parse(), Ok(ArchiveMode::Schema("cold".into())));
        assert_eq!("tablespace: slow disk".parse(), Ok(ArchiveMode::Tablespace("slow disk".into())));
        assert_eq!("drop".parse(), Ok(ArchiveMode::Drop));
        assert!("schema:".parse::<ArchiveMode>().is_err());
        assert!("shred".parse::<ArchiveMode>().is_err());
    }
}
