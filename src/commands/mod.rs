//! One module per subcommand.

pub mod analyze;
pub mod causality;
pub mod client;
pub mod compact;
pub mod demo;
pub mod import;
pub mod recording;
pub mod replay;
pub mod report;
pub mod serve;
pub mod session;
pub mod sessions;
pub mod simulate;
pub mod sql;
pub mod verify;
