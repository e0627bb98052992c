// SPDX-License-Identifier: MPL-2.0
//! The thread CPU rungs run their frames on.
//!
//! libtorch cannot stop a forward pass halfway. When a frame's rung is still running at the
//! frame's deadline (on a 2-core machine a two-thread frame that shares a core with another
//! process waits at every fork-join region: 150-300 ms in all), the streaming thread stops
//! waiting for it, makes the frame with GStreamer's scaler instead and pushes it on time, while
//! the run it gave up on goes on here to its end. [`InferenceThread::busy`] says whether such a
//! run still holds the thread: frames planned meanwhile are made by the scaler too, rather than
//! queued behind it. The element also queues work it does not wait for at all (a limit already
//! spent): the priming of the thread after a live warm-up.
//!
//! Nothing here knows GStreamer or libtorch: jobs are closures.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::{JoinHandle, ThreadId},
    time::{Duration, Instant},
};

type Job = Box<dyn FnOnce() + Send>;

/// A run given up on that may still be running.
#[derive(Debug)]
struct Abandoned {
    /// What ran (for the log).
    what: String,
    /// How long it took, in ns + 1, once it ended; 0 while it runs.
    took: Arc<AtomicU64>,
}

/// Why [`InferenceThread::run`] returned without the job's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRun {
    /// The job was still running after `limit`; it goes on to its end on the thread.
    GaveUp(Duration),
    /// The job panicked (the message says what and why), or the thread is gone.
    Gone(String),
}

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRun::GaveUp(after) => write!(f, "given up on after {after:?}"),
            NotRun::Gone(why) => f.write_str(why),
        }
    }
}

/// One thread that runs jobs in order; the caller waits for each, up to a limit.
#[derive(Debug)]
pub struct InferenceThread {
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
    id: ThreadId,
    abandoned: Option<Abandoned>,
}

impl InferenceThread {
    pub fn spawn(name: &str) -> Result<Self, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for job in queue {
                    // each job catches its own panic and reports it (`run`)
                    job();
                }
            })
            .map_err(|e| format!("cannot start the element's inference thread: {e}"))?;
        Ok(Self {
            jobs: Some(jobs),
            id: handle.thread().id(),
            handle: Some(handle),
            abandoned: None,
        })
    }

    /// The thread's id (libtorch's per-thread state: which rungs ran there).
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// Runs `work` on the thread after the jobs before it, and waits for its result: up to
    /// `limit` from `since` (`None`: to its end). A job given up on runs on; until it ends,
    /// [`InferenceThread::busy`] is true. `what` names it in that case.
    pub fn run<R: Send + 'static>(
        &mut self,
        what: &str,
        work: impl FnOnce() -> R + Send + 'static,
        limit: Option<(Instant, Duration)>,
    ) -> Result<R, NotRun> {
        let (done, result) = mpsc::sync_channel(1);
        let took = Arc::new(AtomicU64::new(0));
        let ended = took.clone();
        let started = Instant::now();
        let job: Job = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|m| m.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into())
            });
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            ended.store(nanos + 1, Ordering::Release);
            let _ = done.send(r);
        });
        let gone = || NotRun::Gone("the element's inference thread has ended".into());
        let panicked = |message: String| {
            NotRun::Gone(format!(
                "{what} panicked on the element's inference thread: {message}"
            ))
        };
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        let Some((since, limit)) = limit else {
            return result.recv().map_err(|_| gone())?.map_err(panicked);
        };
        let left = limit.saturating_sub(since.elapsed());
        match result.recv_timeout(left) {
            Ok(r) => r.map_err(panicked),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.abandoned = Some(Abandoned {
                    what: what.into(),
                    took,
                });
                Err(NotRun::GaveUp(since.elapsed()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }

    /// Whether a job given up on (or not waited for) still runs.
    pub fn busy(&self) -> bool {
        self.abandoned
            .as_ref()
            .is_some_and(|a| a.took.load(Ordering::Acquire) == 0)
    }

    /// Once a job given up on has ended: what it was and how long it took from when it was
    /// queued (once; `None` before and after).
    pub fn take_ended(&mut self) -> Option<(String, Duration)> {
        let took = self.abandoned.as_ref()?.took.load(Ordering::Acquire);
        if took == 0 {
            return None;
        }
        let what = self.abandoned.take().map(|a| a.what).unwrap_or_default();
        Some((what, Duration::from_nanos(took - 1)))
    }

    /// Ends the thread after the job it runs, and waits for it (not from the thread itself).
    pub fn join(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.jobs.take());
        if let Some(handle) = self.handle.take()
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for InferenceThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    /// A job that runs until the test lets it go.
    fn gated() -> (mpsc::Sender<()>, impl FnOnce() -> u32 + Send + 'static) {
        let (go, wait) = mpsc::channel::<()>();
        (go, move || {
            let _ = wait.recv();
            7
        })
    }

    #[test]
    fn a_job_runs_on_the_thread_and_returns_its_result() {
        let mut thread = InferenceThread::spawn("test-inference").unwrap();
        let id = thread.id();
        let ran_on = thread
            .run("id", || std::thread::current().id(), None)
            .unwrap();
        assert_eq!(ran_on, id);
        assert_ne!(ran_on, std::thread::current().id());
        let within = thread.run("sum", || 2 + 3, Some((Instant::now(), LONG)));
        assert_eq!(within, Ok(5));
        assert!(!thread.busy());
        assert_eq!(thread.take_ended(), None);
    }

    #[test]
    fn a_job_past_its_limit_is_given_up_on_and_keeps_the_thread_busy_until_it_ends() {
        let mut thread = InferenceThread::spawn("test-inference").unwrap();
        let (go, job) = gated();
        let since = Instant::now();
        let limit = Duration::from_millis(20);
        let Err(NotRun::GaveUp(waited)) = thread.run("slow rung", job, Some((since, limit))) else {
            panic!("a job that cannot end before its limit was waited for")
        };
        assert!(
            waited >= limit,
            "gave up after {waited:?}, before the limit"
        );
        assert!(thread.busy());
        assert_eq!(thread.take_ended(), None, "it has not ended");
        assert!(thread.busy());
        go.send(()).unwrap();
        // the next job runs after the one given up on: its result says that one ended
        assert_eq!(thread.run("next", || 1, None), Ok(1));
        assert!(!thread.busy());
        let (what, took) = thread.take_ended().expect("the job given up on has ended");
        assert_eq!(what, "slow rung");
        assert!(
            took >= limit,
            "it ran {took:?}, less than it was waited for"
        );
        assert_eq!(thread.take_ended(), None, "its end is reported once");
    }

    #[test]
    fn a_limit_already_spent_gives_up_at_once() {
        let mut thread = InferenceThread::spawn("test-inference").unwrap();
        let (go, job) = gated();
        let since = Instant::now() - Duration::from_millis(50);
        let result = thread.run("late", job, Some((since, Duration::from_millis(10))));
        assert!(matches!(result, Err(NotRun::GaveUp(w)) if w >= Duration::from_millis(50)));
        go.send(()).unwrap();
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_thread_runs_the_next_one() {
        let mut thread = InferenceThread::spawn("test-inference").unwrap();
        let result = thread.run("bad", || -> u32 { panic!("inside a job") }, None);
        let Err(NotRun::Gone(why)) = result else {
            panic!("a panicking job returned {result:?}")
        };
        assert_eq!(
            why,
            "bad panicked on the element's inference thread: inside a job"
        );
        assert_eq!(thread.run("good", || 3, None), Ok(3));
    }

    #[test]
    fn joining_waits_for_the_job_in_progress() {
        let mut thread = InferenceThread::spawn("test-inference").unwrap();
        let (go, job) = gated();
        let (ended_tx, ended) = mpsc::channel();
        let result = thread.run(
            "slow",
            move || {
                let r = job();
                ended_tx.send(()).unwrap();
                r
            },
            Some((Instant::now(), Duration::ZERO)),
        );
        assert!(matches!(result, Err(NotRun::GaveUp(_))));
        let joiner = std::thread::spawn(move || thread.join());
        go.send(()).unwrap();
        joiner.join().unwrap();
        assert_eq!(
            ended.try_recv(),
            Ok(()),
            "join returned before the job ended"
        );
    }
}
