//! Reaching the shards from the management thread: a closure is sent down a
//! shard's control channel, runs on the shard's own thread with its state,
//! and its result comes back over a oneshot channel, bounded in time. The
//! SIP hot path never takes a lock for this; it drains the channel between
//! batches.

use presence_proto::shard::Shard;
use presence_proto::time::Instant;
use presence_runtime::Control;
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a shard gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No shard has this id.
    #[error("shard {0} does not exist")]
    NoSuchShard(usize),
    /// The shard's control queue is full.
    #[error("shard {0} has too many control requests queued")]
    Busy(usize),
    /// The shard's thread has ended.
    #[error("shard {0} has stopped")]
    Stopped(usize),
    /// The shard did not answer within the timeout.
    #[error("shard {0} did not answer within {1:?}")]
    Timeout(usize, Duration),
}

/// The management plane's handle on every shard.
pub struct ShardLink {
    controls: Vec<crossbeam::channel::Sender<Control>>,
    timeout: Duration,
}

impl ShardLink {
    /// `controls` is indexed by shard id (`ServerHandle::controls`).
    pub fn new(controls: Vec<crossbeam::channel::Sender<Control>>, timeout: Duration) -> Self {
        ShardLink { controls, timeout }
    }

    /// Number of shards.
    pub fn count(&self) -> usize {
        self.controls.len()
    }

    /// How long a shard may take to answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Control requests waiting for a shard to pick them up.
    pub fn queue_depth(&self, shard: usize) -> usize {
        self.controls.get(shard).map_or(0, |sender| sender.len())
    }

    fn post<T, F>(&self, shard: usize, work: F) -> Result<oneshot::Receiver<T>, AskError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Shard, Instant) -> T + Send + 'static,
    {
        let sender = self.controls.get(shard).ok_or(AskError::NoSuchShard(shard))?;
        let (reply, answer) = oneshot::channel();
        let control: Control = Box::new(move |state: &mut Shard, now: Instant| {
            // The asker may have given up (timeout): nobody to tell then.
            let _ = reply.send(work(state, now));
        });
        sender.try_send(control).map_err(|error| match error {
            crossbeam::channel::TrySendError::Full(_) => AskError::Busy(shard),
            crossbeam::channel::TrySendError::Disconnected(_) => AskError::Stopped(shard),
        })?;
        Ok(answer)
    }

    async fn wait<T>(
        &self,
        shard: usize,
        answer: oneshot::Receiver<T>,
        deadline: tokio::time::Instant,
    ) -> Result<T, AskError> {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(AskError::Stopped(shard)),
            Err(_) => Err(AskError::Timeout(shard, self.timeout)),
        }
    }

    /// Run `work` on one shard and return its result.
    pub async fn ask<T, F>(&self, shard: usize, work: F) -> Result<T, AskError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Shard, Instant) -> T + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let answer = self.post(shard, work)?;
        self.wait(shard, answer, deadline).await
    }

    /// Run `work` on every shard at once; results are indexed by shard id.
    pub async fn ask_all<T, F>(&self, work: F) -> Vec<Result<T, AskError>>
    where
        T: Send + 'static,
        F: Fn(&mut Shard, Instant) -> T + Clone + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Post to every shard before waiting for any, so the shards work in
        // parallel and the whole round is bounded by one timeout.
        let posted: Vec<_> = (0..self.count()).map(|shard| self.post(shard, work.clone())).collect();
        let mut results = Vec::with_capacity(posted.len());
        for (shard, answer) in posted.into_iter().enumerate() {
            results.push(match answer {
                Ok(answer) => self.wait(shard, answer, deadline).await,
                Err(error) => Err(error),
            });
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::config::EngineConfig;

    /// A stand-in for a shard thread: runs every control it receives.
    fn fake_shard(id: u16, shards: u16) -> crossbeam::channel::Sender<Control> {
        let (tx, rx) = crossbeam::channel::bounded::<Control>(4);
        std::thread::spawn(move || {
            let mut shard = Shard::new(id, shards, EngineConfig::default(), 7);
            while let Ok(control) = rx.recv() {
                control(&mut shard, Instant::from_micros(1));
            }
        });
        tx
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
    }

    #[test]
    fn ask_all_answers_in_shard_order() {
        let link = ShardLink::new(vec![fake_shard(0, 2), fake_shard(1, 2)], Duration::from_secs(2));
        let ids = runtime().block_on(link.ask_all(|shard, _| shard.id()));
        assert_eq!(ids, vec![Ok(0), Ok(1)]);
    }

    #[test]
    fn a_silent_shard_times_out_and_a_missing_one_is_named() {
        // A channel nobody drains: the shard is "stuck".
        let (stuck, _kept_open) = crossbeam::channel::bounded::<Control>(4);
        let link = ShardLink::new(vec![fake_shard(0, 2), stuck], Duration::from_millis(50));
        let rt = runtime();
        let results = rt.block_on(link.ask_all(|shard, _| shard.id()));
        assert_eq!(results[0], Ok(0));
        assert_eq!(results[1], Err(AskError::Timeout(1, Duration::from_millis(50))));
        assert_eq!(
            rt.block_on(link.ask(5, |shard, _| shard.id())),
            Err(AskError::NoSuchShard(5))
        );
        assert_eq!(link.queue_depth(1), 1, "the unanswered control is still queued");
    }

    #[test]
    fn a_stopped_shard_is_reported() {
        let (gone, receiver) = crossbeam::channel::bounded::<Control>(4);
        drop(receiver);
        let link = ShardLink::new(vec![gone], Duration::from_millis(50));
        assert_eq!(
            runtime().block_on(link.ask(0, |shard, _| shard.id())),
            Err(AskError::Stopped(0))
        );
    }
}
