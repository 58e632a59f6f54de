//! An action a worker began and did not finish (see the extension's
//! `unfinished` module, which keeps them in `upkeep.unfinished_actions`).

use crate::sql::QualifiedName;

/// An action begun and not finished: its target and the statements left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub target: QualifiedName,
    pub steps: Vec<String>,
}
