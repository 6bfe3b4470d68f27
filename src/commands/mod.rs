//! One module per subcommand.

pub mod import;
pub mod sql;
