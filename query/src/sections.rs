//! The independent parts of one command, run side by side: at most one per core.
//!
//! Most statements of an analysis number one session in order, and a session is one window
//! partition, so each statement keeps about one core busy. `analyze` runs its sections (slow
//! operations, loops, errors, hot loops and fights, conflict storms, requeues) as tasks of the
//! runtime instead of one after the other, so a two-core machine works on two at once. They share
//! the context's memory pool, which still bounds what their sorts and aggregations hold.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::QueryError;

/// Starts the sections of one command, at most as many at once as there are cores.
pub(crate) struct Sections {
    /// When the command began: the debug log gives each section's start and end from here.
    began: std::time::Instant,
    permits: Arc<Semaphore>,
    /// Fires when the section spawned last has its permit. The runtime polls new tasks in no set
    /// order (the newest often first), so each section queues for a permit only after the one
    /// spawned before it got one: sections start in the order they were spawned.
    previous_started: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Sections {
    /// As many running sections at once as the machine has cores.
    pub(crate) fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            began: std::time::Instant::now(),
            permits: Arc::new(Semaphore::new(cores)),
            previous_started: Mutex::new(None),
        }
    }

    /// Starts `work` as soon as a core is free and every section spawned before it has started:
    /// spawn the longest first. `name` is for the debug log, which says when each section
    /// started and ended (`KUBESTEP_LOG=kubestep_query::sections=debug`).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        name: &'static str,
        work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Section<T> {
        let (permits, began) = (Arc::clone(&self.permits), self.began);
        let (started, next_waits_for) = oneshot::channel();
        let previous = self.previous_started.lock().unwrap_or_else(PoisonError::into_inner).replace(next_waits_for);
        Section(tokio::spawn(async move {
            if let Some(previous) = previous {
                // An error only says the section before was stopped before it started.
                let _ = previous.await;
            }
            let _permit = permits.acquire_owned().await;
            let _ = started.send(());
            let started_ms = began.elapsed().as_millis();
            let result = work.await;
            tracing::debug!(section = name, started_ms, ended_ms = began.elapsed().as_millis(), "section done");
            result
        }))
    }
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
