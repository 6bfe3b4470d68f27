//! One module per subcommand.

pub mod compact;
pub mod import;
pub mod serve;
pub mod session;
pub mod sql;
