//! Group commit: many small writes of one kind share one transaction.
//!
//! Thousands of agents each syncing and reporting metrics mean thousands
//! of tiny write transactions a second, and SQLite takes one writer at a
//! time (PostgreSQL pays a WAL flush per commit). Here each caller queues
//! its job and waits for its own outcome; whoever finds no commit running
//! becomes the leader, takes every job queued so far and commits them in
//! one transaction. Alone, a caller commits at once, as before; under
//! load, the jobs that arrive while one batch commits form the next batch.
//!
//! A batch runs in a task of its own, so it completes, and every caller in
//! it gets its answer, even if the leader's request is dropped midway.
//!
//! SQLite writes one batch at a time. PostgreSQL may write a few at once
//! (`GroupCommit::with_writers`): while one batch waits on the network,
//! the next can be written on another connection. Batches lock rows in
//! one global order (see `sql::write_batch`), so they cannot deadlock.

use std::future::Future;
use std::sync::{Arc, Mutex};

use pakkt_core::store::StoreError;
use tokio::sync::oneshot;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One caller's job and where its outcome goes.
struct Queued<J, R> {
    job: J,
    reply: oneshot::Sender<Result<R>>,
}

/// The queue and the leaders' permits for one kind of write.
pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Vec<Queued<J, R>>>,
    /// One permit per batch that may be written at once, held by the
    /// batch's task (so that a leader whose request is dropped cannot let
    /// another batch take its place early).
    leaders: Arc<tokio::sync::Semaphore>,
}

impl<J, R> Default for GroupCommit<J, R> {
    fn default() -> Self {
        Self::with_writers(1)
    }
}

impl<J, R> GroupCommit<J, R> {
    /// At most `writers` batches written at once (at least one).
    pub(crate) fn with_writers(writers: usize) -> Self {
        Self { queue: Mutex::new(Vec::new()), leaders: Arc::new(tokio::sync::Semaphore::new(writers.max(1))) }
    }
}

impl<J, R> std::fmt::Debug for GroupCommit<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<J: Send + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// Runs `job` in a batch and returns its outcome. `commit` writes a
    /// batch in one transaction and returns one outcome per job, in order;
    /// an `Err` fails every job of the batch (nothing of it was written).
    pub(crate) async fn submit<F, Fut>(&self, job: J, commit: F) -> Result<R>
    where
        F: FnOnce(Vec<J>) -> Fut,
        Fut: Future<Output = Result<Vec<Result<R>>>> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        self.lock_queue().push(Queued { job, reply });
        let Ok(leader) = Arc::clone(&self.leaders).acquire_owned().await else {
            // Never closed; were it, nobody would write this job.
            return Err(lost());
        };
        // The previous leader may have taken this job already.
        match answer.try_recv() {
            Ok(outcome) => return outcome,
            Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch = std::mem::take(&mut *self.lock_queue());
        if batch.is_empty() {
            drop(leader);
        } else {
            let (jobs, replies): (Vec<J>, Vec<_>) = batch.into_iter().map(|q| (q.job, q.reply)).unzip();
            let written = commit(jobs);
            let task = tokio::spawn(async move {
                let _leader = leader;
                match written.await {
                    Ok(outcomes) => {
                        let mut outcomes = outcomes.into_iter();
                        for reply in replies {
                            let _ = reply.send(outcomes.next().unwrap_or_else(|| Err(lost())));
                        }
                    }
                    Err(error) => {
                        // Each caller gets the cause, not a wrapped copy of it.
                        let message = match &error {
                            StoreError::Backend(cause) => cause.to_string(),
                            other => other.to_string(),
                        };
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::Backend(message.clone().into())));
                        }
                    }
                }
            });
            // A panicking batch drops its replies: each caller sees `lost`.
            let _ = task.await;
        }
        answer.await.unwrap_or_else(|_| Err(lost()))
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued<J, R>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn lost() -> StoreError {
    StoreError::Backend("the batch holding this write failed before answering".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_jobs_share_batches_and_each_gets_its_own_answer() {
        let group = Arc::new(GroupCommit::<u32, u32>::default());
        let batches = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for n in 0..200u32 {
            let (group, batches) = (Arc::clone(&group), Arc::clone(&batches));
            callers.push(tokio::spawn(async move {
                group
                    .submit(n, |jobs| async move {
                        batches.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        Ok(jobs
                            .into_iter()
                            .map(|j| if j == 7 { Err(StoreError::NotFound) } else { Ok(j * 2) })
                            .collect())
                    })
                    .await
            }));
        }
        for (n, caller) in (0..200u32).zip(callers) {
            let outcome = caller.await.expect("caller");
            if n == 7 {
                assert!(matches!(outcome, Err(StoreError::NotFound)), "one job's failure stays its own");
            } else {
                assert_eq!(outcome.expect("written"), n * 2);
            }
        }
        let batches = batches.load(Ordering::Relaxed);
        assert!(batches < 200, "200 jobs in {batches} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_jobs() {
        let group = GroupCommit::<u32, u32>::default();
        let outcome = group.submit(1, |_| async { Err(StoreError::Backend("disk full".into())) }).await;
        assert!(matches!(outcome, Err(StoreError::Backend(e)) if e.to_string() == "disk full"));
    }
}
