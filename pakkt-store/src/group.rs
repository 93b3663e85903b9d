//! Group commit: many small writes share one transaction.
//!
//! Thousands of agents each syncing and reporting metrics mean thousands
//! of tiny write transactions a second, and SQLite takes one writer at a
//! time (PostgreSQL pays a WAL flush per commit). Here each caller queues
//! its job and waits for its own outcome; whoever finds no commit running
//! becomes the leader, takes every job queued so far and commits them in
//! one transaction. Two kinds of job share the batches, each in a lane of
//! its own with its own type of answer (syncs and metrics reports). Alone,
//! a caller commits at once, as before; under
//! load, the jobs that arrive while one batch commits form the next batch.
//!
//! A batch runs in a task of its own, so it completes, and every caller in
//! it gets its answer, even if the leader's request is dropped midway.
//!
//! SQLite writes one batch at a time. PostgreSQL may write a few at once
//! (`GroupCommit::with_writers`): while one batch waits on the network,
//! the next can be written on another connection. Batches lock rows in
//! one global order (see `sql::batch`), so they cannot deadlock.

use std::future::Future;
use std::sync::{Arc, Mutex};

use pakkt_core::store::StoreError;
use tokio::sync::oneshot;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where one job's outcome goes.
type Reply<R> = oneshot::Sender<Result<R>>;

/// The jobs queued so far, one lane per kind, each with its reply.
struct Lanes<A, RA, B, RB> {
    a: Vec<(A, Reply<RA>)>,
    b: Vec<(B, Reply<RB>)>,
}

impl<A, RA, B, RB> Default for Lanes<A, RA, B, RB> {
    fn default() -> Self {
        Self { a: Vec::new(), b: Vec::new() }
    }
}

/// The outcomes of a batch: one per job of each lane, in order.
pub(crate) type Outcomes<RA, RB> = (Vec<Result<RA>>, Vec<Result<RB>>);

/// Group commit of two kinds of job, `A` answered with `RA` and `B` with
/// `RB`: jobs of both kinds queued while one batch commits share the next
/// batch (one transaction), and each caller gets its own typed answer.
pub(crate) struct GroupCommit<A, RA, B, RB> {
    lanes: Mutex<Lanes<A, RA, B, RB>>,
    /// One permit per batch that may be written at once, held by the
    /// batch's task (so that a leader whose request is dropped cannot let
    /// another batch take its place early).
    leaders: Arc<tokio::sync::Semaphore>,
}

impl<A, RA, B, RB> Default for GroupCommit<A, RA, B, RB> {
    fn default() -> Self {
        Self::with_writers(1)
    }
}

impl<A, RA, B, RB> GroupCommit<A, RA, B, RB> {
    /// At most `writers` batches written at once (at least one).
    pub(crate) fn with_writers(writers: usize) -> Self {
        Self { lanes: Mutex::new(Lanes::default()), leaders: Arc::new(tokio::sync::Semaphore::new(writers.max(1))) }
    }
}

impl<A, RA, B, RB> std::fmt::Debug for GroupCommit<A, RA, B, RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<A, RA, B, RB> GroupCommit<A, RA, B, RB>
where
    A: Send + 'static,
    RA: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    /// Runs `job` of the first kind in a batch and returns its outcome.
    /// `commit` writes a batch in one transaction and returns one outcome
    /// per job of each kind, in order; an `Err` fails every job of the
    /// batch (nothing of it was written).
    pub(crate) async fn submit_a<F, Fut>(&self, job: A, commit: F) -> Result<RA>
    where
        F: FnOnce(Vec<A>, Vec<B>) -> Fut,
        Fut: Future<Output = Result<Outcomes<RA, RB>>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.lock_lanes().a.push((job, reply));
        self.lead(answer, commit).await
    }

    /// As [`Self::submit_a`], for a job of the second kind.
    pub(crate) async fn submit_b<F, Fut>(&self, job: B, commit: F) -> Result<RB>
    where
        F: FnOnce(Vec<A>, Vec<B>) -> Fut,
        Fut: Future<Output = Result<Outcomes<RA, RB>>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.lock_lanes().b.push((job, reply));
        self.lead(answer, commit).await
    }

    /// Waits for a leader's permit; unless the previous leader has taken
    /// this caller's job already, writes everything queued as one batch.
    /// Then waits for the caller's own answer.
    async fn lead<T, F, Fut>(&self, mut answer: oneshot::Receiver<Result<T>>, commit: F) -> Result<T>
    where
        F: FnOnce(Vec<A>, Vec<B>) -> Fut,
        Fut: Future<Output = Result<Outcomes<RA, RB>>> + Send + 'static,
    {
        let Ok(leader) = Arc::clone(&self.leaders).acquire_owned().await else {
            // Never closed; were it, nobody would write this job.
            return Err(lost());
        };
        match answer.try_recv() {
            Ok(outcome) => return outcome,
            Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let lanes = std::mem::take(&mut *self.lock_lanes());
        if lanes.a.is_empty() && lanes.b.is_empty() {
            drop(leader);
        } else {
            let (jobs_a, replies_a): (Vec<A>, Vec<_>) = lanes.a.into_iter().unzip();
            let (jobs_b, replies_b): (Vec<B>, Vec<_>) = lanes.b.into_iter().unzip();
            let written = commit(jobs_a, jobs_b);
            let task = tokio::spawn(async move {
                let _leader = leader;
                match written.await {
                    Ok((outcomes_a, outcomes_b)) => {
                        answer_each(replies_a, outcomes_a);
                        answer_each(replies_b, outcomes_b);
                    }
                    Err(error) => {
                        // Each caller gets the cause, not a wrapped copy of it.
                        let message = match &error {
                            StoreError::Backend(cause) => cause.to_string(),
                            other => other.to_string(),
                        };
                        fail_each(replies_a, &message);
                        fail_each(replies_b, &message);
                    }
                }
            });
            // A panicking batch drops its replies: each caller sees `lost`.
            let _ = task.await;
        }
        answer.await.unwrap_or_else(|_| Err(lost()))
    }

    fn lock_lanes(&self) -> std::sync::MutexGuard<'_, Lanes<A, RA, B, RB>> {
        // A panic while holding this lock cannot leave the Vecs inconsistent.
        self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sends each job its outcome; a job the batch gave none is `lost`.
fn answer_each<R>(replies: Vec<Reply<R>>, outcomes: Vec<Result<R>>) {
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        let _ = reply.send(outcomes.next().unwrap_or_else(|| Err(lost())));
    }
}

fn fail_each<R>(replies: Vec<Reply<R>>, message: &str) {
    for reply in replies {
        let _ = reply.send(Err(StoreError::Backend(message.to_owned().into())));
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
        let group = Arc::new(GroupCommit::<u32, u32, String, usize>::default());
        let batches = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for n in 0..200u32 {
            let (group, batches) = (Arc::clone(&group), Arc::clone(&batches));
            callers.push(tokio::spawn(async move {
                let commit = |a: Vec<u32>, b: Vec<String>| async move {
                    batches.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    let a = a.into_iter().map(|j| if j == 8 { Err(StoreError::NotFound) } else { Ok(j * 2) }).collect();
                    let b = b.into_iter().map(|s| Ok(s.len())).collect();
                    Ok((a, b))
                };
                if n % 2 == 0 {
                    group.submit_a(n, commit).await
                } else {
                    // Jobs of the other kind share the batches and get their own type.
                    group.submit_b("x".repeat(n as usize), commit).await.map(|len| len as u32 * 2)
                }
            }));
        }
        for (n, caller) in (0..200u32).zip(callers) {
            let outcome = caller.await.expect("caller");
            if n == 8 {
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
        let group = GroupCommit::<u32, u32, u32, u32>::default();
        let outcome = group.submit_a(1, |_, _| async { Err(StoreError::Backend("disk full".into())) }).await;
        assert!(matches!(outcome, Err(StoreError::Backend(e)) if e.to_string() == "disk full"));
    }
}
