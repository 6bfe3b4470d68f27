//! The independent parts of one command, run side by side: at most one per core.
//!
//! Most statements of an analysis number one session in order, and a session is one window
//! partition, so each statement keeps about one core busy. `analyze` runs its sections (slow
//! operations, loops, errors, hot loops and fights, conflict storms, requeues) as tasks of the
//! runtime instead of one after the other, so a two-core machine works on two at once. They share
//! the context's memory pool, which still bounds what their sorts and aggregations hold.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::QueryError;

/// Starts the sections of one command, at most as many at once as there are cores.
pub(crate) struct Sections {
    permits: Arc<Semaphore>,
}

impl Sections {
    /// As many running sections at once as the machine has cores.
    pub(crate) fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self { permits: Arc::new(Semaphore::new(cores)) }
    }

    /// Starts `work` as soon as a core is free. Sections start in the order they are spawned, so
    /// spawn the longest first.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Section<T> {
        let permits = Arc::clone(&self.permits);
        Section(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            work.await
        }))
    }
}

/// Starts `work` at once, without waiting for a core: for a part of a section that already holds
/// one (two independent statements of one section, side by side), where waiting for a second
/// permit could wait for ever.
pub(crate) fn beside<T: Send + 'static>(
    work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
) -> Section<T> {
    Section(tokio::spawn(work))
}

/// A running section. Dropping it (when another section failed first) stops it.
pub(crate) struct Section<T>(JoinHandle<Result<T, QueryError>>);

impl<T> Section<T> {
    /// Waits for the section's result. A panic in the section is resumed here.
    pub(crate) async fn result(mut self) -> Result<T, QueryError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(QueryError::Data(format!("an analysis section was stopped: {e}"))),
        }
    }
}

impl<T> Drop for Section<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
