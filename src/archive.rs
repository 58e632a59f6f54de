//! Archive modes of a partition policy: where partitions older than the
//! retention go. (Registration only validates them for now; the moves come
//! with the archive work.)

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
