//! Reading one consistent set of files from a recording in object storage while `kubestep
//! compact` merges its files.
//!
//! In a directory, compaction swaps a partition's files in one rename, and a query that finds a
//! listed file gone plans again ([`crate::run_sql`]). In a bucket the merged files appear and the
//! merged-away files disappear one object at a time, so a listing made meanwhile can hold both.
//! Compaction announces itself in the recording's journal first (`kubestep_schemas::compaction`),
//! and [`consistently`] uses it: it waits until no compaction is under way, runs the work, and
//! accepts the result only if the journal still reads the same; otherwise it runs the work again.
//! The check is two listings of `compact/` per attempt, made by the client whatever engine runs
//! the SQL, so a Ballista cluster needs nothing from us for it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use kubestep_schemas::compaction::{JournalEntry, list_journal};
use kubestep_schemas::location::{RemoteRecording, store_error_line};

use crate::context::QueryError;

/// The environment variable with how long, in seconds, a query waits for a compaction under way
/// in a bucket before giving up (default [`DEFAULT_WAIT_SECS`]).
pub const WAIT_VARIABLE: &str = "KUBESTEP_COMPACTION_WAIT";

/// A compaction uploads its merged files and deletes its inputs in seconds; two minutes covers
/// large partitions on a slow link.
pub const DEFAULT_WAIT_SECS: u64 = 120;

/// How many times work is run again because a compaction overlapped it.
const MAX_ATTEMPTS: usize = 5;

/// How often the journal is listed while a compaction is under way.
const POLL: Duration = Duration::from_millis(250);

/// The compaction journal of the recording a context reads, kept in the context's configuration
/// (only for a recording in object storage).
#[derive(Debug)]
pub(crate) struct CompactionWatch {
    remote: RemoteRecording,
    wait: Duration,
}

impl CompactionWatch {
    pub(crate) fn new(remote: RemoteRecording) -> Self {
        let wait =
            std::env::var(WAIT_VARIABLE).ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(DEFAULT_WAIT_SECS);
        Self { remote, wait: Duration::from_secs(wait) }
    }

    async fn journal(&self) -> Result<Vec<JournalEntry>, QueryError> {
        list_journal(&self.remote).await.map_err(|e| QueryError::Compaction {
            url: self.remote.url.clone(),
            reason: format!("reading its compaction journal: {}", store_error_line(&e)),
        })
    }

    /// The journal once no compaction is under way.
    async fn quiet(&self) -> Result<Vec<JournalEntry>, QueryError> {
        let started = Instant::now();
        loop {
            let journal = self.journal().await?;
            let Some(merging) = journal.iter().find(|e| !e.done) else {
                return Ok(journal);
            };
            if started.elapsed() >= self.wait {
                return Err(QueryError::Compaction {
                    url: self.remote.url.clone(),
                    reason: format!(
                        "a compaction has been merging files for more than {} s ({}/compact/{}); if no `kubestep \
                         compact` is running, one was interrupted: run `kubestep compact -d {}` to finish it \
                         ({WAIT_VARIABLE} sets how long to wait)",
                        self.wait.as_secs(),
                        self.remote.url,
                        merging.name(),
                        self.remote.url
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Runs `work` on a set of files that no compaction changed while it listed them.
///
/// For a recording in a directory this is `work()`. For a recording in object storage, `work` runs
/// after any compaction under way has finished, and runs again when the journal changed while it
/// ran. Work that returns a stream is checked up to the moment the stream is planned (the files
/// are listed then); a file deleted later fails the stream with a not-found error.
pub async fn consistently<T, F, Fut>(ctx: &SessionContext, mut work: F) -> Result<T, QueryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueryError>>,
{
    let Some(watch) = ctx.state().config().get_extension::<CompactionWatch>() else {
        return work().await;
    };
    let mut attempt = 1;
    loop {
        let before = watch.quiet().await?;
        let result = work().await;
        let after = watch.journal().await?;
        if after == before {
            return result;
        }
        if attempt == MAX_ATTEMPTS {
            return Err(QueryError::Compaction {
                url: watch.remote.url.clone(),
                reason: format!("compactions kept changing its files during {MAX_ATTEMPTS} attempts; try again"),
            });
        }
        tracing::debug!(attempt, "a compaction ran while the query listed the files; running it again");
        attempt += 1;
    }
}

/// Adds the journal watch to a context reading `remote`.
pub(crate) fn watch(remote: &RemoteRecording) -> Arc<CompactionWatch> {
    Arc::new(CompactionWatch::new(remote.clone()))
}
