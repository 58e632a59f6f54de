//! Row archiving of plain tables: the rules a policy must meet and the
//! batch statement that moves rows.

pub mod rows;
