//! # kubestep-schemas
//!
//! The vocabulary every other KubeStep crate speaks: the `audit.k8s.io/v1` event as the API server
//! writes it ([`audit`]), the operation record KubeStep turns it into ([`record`]), and the Arrow
//! schema and batch builder of the `operations` table ([`schema`]), and where a recording lives
//! ([`location`]: a directory or an object-store prefix), and the compaction journal through which
//! `kubestep compact` and the readers of a bucket agree on a consistent set of files
//! ([`compaction`]), and the summary each file carries in its footer ([`summary`]). The ingest and
//! query crates never depend on each other; both depend on this one.

pub mod audit;
pub mod compaction;
pub mod location;
pub mod record;
pub mod schema;
pub mod session;
pub mod summary;

pub use record::OperationRecord;
pub use schema::{OperationBatchBuilder, file_schema, partition_fields, table_schema};
