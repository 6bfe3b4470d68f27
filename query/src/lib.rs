//! # kubestep-query
//!
//! Opens a recording directory as a DataFusion [`SessionContext`] whose table `operations` is the
//! hive-partitioned Parquet tree the ingest side writes, registers the documented views, and runs
//! the analyses behind `sessions`, `replay` and `analyze`. This crate only reads: it never
//! creates, changes or deletes anything in a recording.
//!
//! - [`context`]: the table, `run_sql` (re-plans when compaction swapped a file away);
//! - [`distinct_counts`]: an optimizer rule so `count(DISTINCT x)` beside `count(*)` groups by `x`;
//! - [`top_rows_per_group`]: a physical optimizer rule so "the N slowest calls per verb" keeps N
//!   rows per verb in a heap instead of sorting every row;
//! - [`compact_views`]: a physical optimizer rule so a full sort of text read as views holds compact
//!   copies, not the Parquet pages the views point into;
//! - [`consistency`]: one consistent set of files from a bucket while `kubestep compact` runs there;
//! - [`engine`]: where the SQL runs, here or on a Ballista cluster (`--engine ballista://...`);
//! - [`views`]: `indexed_operations`, `writes`, `object_versions` and the behaviour views (SQL in
//!   `query/sql/views/`), each planned when a statement first names it;
//! - [`sessions`]: one summary row per session;
//! - [`replay`]: a session's steps in order, streamed, with filters and the objects of a step;
//! - [`diff`]: what a write changed in its object, as field paths;
//! - [`analyze`]: slow operations, errors and loops ([`loops`]); what needs each operation's
//!   position comes from one ordered pass over the session (`session_walk`), the counts from SQL;
//! - [`behaviour`]: hot loops, fights, conflict storms and error requeue loops; the hot-loop and
//!   fight candidates (the rows of their views) come from one ordered pass over the session's
//!   successful writes ([`candidates`]);
//! - [`causality`]: reconcile episodes, causality edges between writes, and chains;
//! - [`report`]: everything the timeline page of a session shows (lanes, marks, density, diffs,
//!   findings), as one value the binary renders.
//!
//! Report types derive `serde::Serialize`; which format to print is the binary's business.

pub mod analyze;
pub mod behaviour;
pub mod candidates;
pub mod causality;
pub mod compact_views;
pub mod consistency;
pub mod context;
pub mod diff;
pub mod distinct_counts;
pub mod engine;
mod group_keys;
pub mod loops;
mod repeated_failures;
pub mod replay;
pub mod report;
mod sections;
mod session_walk;
pub mod sessions;
pub mod top_rows_per_group;
mod values;
pub mod views;

pub use consistency::consistently;
pub use context::{
    OPERATIONS_TABLE, QueryError, TextColumns, open_recording, open_recording_on, open_recording_with, run_sql,
};
pub use engine::Engine;
