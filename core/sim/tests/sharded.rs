//! The scripted harness over several shards: requests land on the shard the
//! kernel picks and reach the owner by hand-off, in-dialog requests and
//! NOTIFY answers find their owner from the identifiers it wrote, and a
//! crashed shard restarts empty without a store, or rebuilt from a durable
//! one, with the store called for every write, crash and recovery.

use presence_proto::config::EngineConfig;
use presence_proto::routing::ShardId;
use presence_proto::state::{Record, StateChange};
use presence_sim::harness::*;
use presence_sim::{NoStore, SimRng, SimStore};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

fn aor(i: usize) -> String {
    format!("sip:user{i}@example.com")
}

#[test]
fn every_presentity_works_whichever_shard_owns_it() {
    let mut h = Harness::sharded(EngineConfig::default(), 4);
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..16 {
        let aor = aor(i);
        owners.insert(h.sim.owner_of(&aor));
        let r = h.publish(&aor, "", &pidf(&aor, "t1", "open", &format!("n{i}")));
        assert_eq!(status(&r), 200, "{r}");
        let (r, after, mut d) = h.subscribe(&aor, "Event: presence\r\n");
        assert_eq!(status(&r), 200, "{r}");
        let notify = after.iter().find(|m| is_notify(m)).expect("first NOTIFY");
        assert!(body(notify).contains(&format!(">n{i}<")), "{notify}");
        // The answer reaches the owner by the branch it wrote: nothing is left in flight.
        assert!(h.answer(notify, 200).is_empty());
        // A refresh reaches the owner by the To-tag it wrote.
        let out = h.resubscribe(&mut d, "Event: presence\r\n");
        assert_eq!(status(&out[0]), 200, "{out:?}");
        let notify = out.iter().find(|m| is_notify(m)).expect("NOTIFY after refresh");
        assert_eq!(cseq_of(notify), 2);
        h.answer(notify, 200);
    }
    assert_eq!(owners.len(), 4, "the presentities spread over every shard");
    assert!(h.sim.net_stats().handoff_batches >= 16, "{:?}", h.sim.net_stats());
    let subscriptions: usize = (0..4).map(|s| h.sim.shard(s).subscriptions().len()).sum();
    assert_eq!(subscriptions, 16);
}

#[test]
fn without_a_store_a_crashed_shard_restarts_empty() {
    let mut h = Harness::sharded(EngineConfig::default(), 2);
    h.sim.set_store(Box::new(NoStore));
    let aor = aor(1);
    let r = h.publish(&aor, "", &pidf(&aor, "t1", "open", "before"));
    let etag = header(&r, "SIP-ETag").expect("ETag").to_owned();
    let owner = h.sim.owner_of(&aor);
    h.sim.crash(owner, Duration::from_millis(100));
    assert!(h.sim.is_down(owner));
    // While it is down, what is sent to it is lost: no answer.
    let text = h.publish_text(&aor, &format!("SIP-If-Match: {etag}\r\n"), "");
    let out = h.feed(text.as_bytes());
    assert!(out.is_empty(), "{out:?}");
    h.advance(Duration::from_millis(200));
    assert!(!h.sim.is_down(owner));
    // Back, and empty: the publication is gone.
    let r = h.publish(&aor, &format!("SIP-If-Match: {etag}\r\n"), "");
    assert_eq!(status(&r), 412, "{r}");
    assert_eq!(h.sim.composed(&aor), None);
}

#[test]
fn with_a_durable_store_a_crashed_shard_keeps_what_it_acknowledged() {
    let mut h = Harness::sharded(EngineConfig::default(), 2);
    let aor = aor(1);
    let r = h.publish(&aor, "", &pidf(&aor, "t1", "open", "before"));
    let etag = header(&r, "SIP-ETag").expect("ETag").to_owned();
    let owner = h.sim.owner_of(&aor);
    let recovered = h.crash_and_restart(owner, Duration::from_millis(100));
    assert_eq!(recovered.map(|r| r.publications), Some(1), "{recovered:?}");
    let r = h.publish(&aor, &format!("SIP-If-Match: {etag}\r\n"), "");
    assert_eq!(status(&r), 200, "{r}");
    let doc = h.sim.composed(&aor).map(|d| String::from_utf8_lossy(&d).into_owned());
    assert!(doc.is_some_and(|d| d.contains(">before<")));
}

/// Calls of the store, for the test to look at.
#[derive(Default)]
struct Calls {
    writes: u64,
    crashes: Vec<ShardId>,
    recoveries: Vec<ShardId>,
}

struct CountingStore(Rc<RefCell<Calls>>);

impl SimStore for CountingStore {
    fn wants_changes(&self) -> bool {
        true
    }
    fn write_delay(&mut self) -> Duration {
        Duration::ZERO
    }
    fn write(&mut self, _: ShardId, _: &[StateChange]) -> bool {
        self.0.borrow_mut().writes += 1;
        true
    }
    fn crash(&mut self, id: ShardId, _: &mut SimRng) {
        self.0.borrow_mut().crashes.push(id);
    }
    fn records(&self, id: ShardId) -> Vec<Record> {
        self.0.borrow_mut().recoveries.push(id);
        Vec::new()
    }
}

#[test]
fn the_store_sees_writes_crashes_and_recoveries() {
    let calls = Rc::new(RefCell::new(Calls::default()));
    let mut config = presence_sim::SimConfig::new(2, EngineConfig::default(), 5);
    config.engine.authz.default_policy = presence_proto::authz::DefaultPolicy::Allow;
    let mut h = Harness::build(config);
    h.sim.set_store(Box::new(CountingStore(calls.clone())));
    let aor = aor(2);
    h.publish(&aor, "", &pidf(&aor, "t1", "open", "x"));
    assert!(calls.borrow().writes >= 1);
    h.sim.crash(1, Duration::ZERO);
    h.advance(Duration::from_millis(1));
    assert_eq!(calls.borrow().crashes, [1]);
    assert_eq!(calls.borrow().recoveries, [1]);
}

/// A durable store whose every write takes 50 ms.
struct SlowStore(presence_sim::FakeStore);

impl SimStore for SlowStore {
    fn wants_changes(&self) -> bool {
        true
    }
    fn write_delay(&mut self) -> Duration {
        Duration::from_millis(50)
    }
    fn write(&mut self, id: ShardId, changes: &[StateChange]) -> bool {
        self.0.write(id, changes)
    }
    fn crash(&mut self, id: ShardId, rng: &mut SimRng) {
        self.0.crash(id, rng);
    }
    fn records(&self, id: ShardId) -> Vec<Record> {
        self.0.records(id)
    }
}

#[test]
fn an_answer_reporting_a_change_leaves_only_once_the_write_completed() {
    let mut h = Harness::default();
    h.sim.set_store(Box::new(SlowStore(presence_sim::FakeStore::new(1))));
    let aor = aor(1);
    let text = h.publish_text(&aor, "", &pidf(&aor, "t1", "open", "slow"));
    assert!(h.feed(text.as_bytes()).is_empty(), "the 200 waits for the write");
    h.advance(Duration::from_millis(49));
    assert!(h.drain().is_empty(), "still writing");
    h.advance(Duration::from_millis(1));
    let out = h.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(status(&out[0].1), 200, "{out:?}");
    // A crash while the write is in progress loses the change and its
    // answer together: nothing acknowledged is lost.
    let text = h.publish_text(&aor, "", &pidf(&aor, "t2", "open", "lost"));
    assert!(h.feed(text.as_bytes()).is_empty());
    h.crash_and_restart(0, Duration::from_millis(100));
    assert!(
        h.drain().iter().all(|(_, m)| status(m) != 200),
        "the answer died with the write"
    );
    let doc = h.sim.composed(&aor).map(|d| String::from_utf8_lossy(&d).into_owned());
    assert!(
        doc.as_deref()
            .is_some_and(|d| d.contains(">slow<") && !d.contains(">lost<")),
        "{doc:?}"
    );
}

/// A store that refuses every write.
struct RefusingStore;

impl SimStore for RefusingStore {
    fn wants_changes(&self) -> bool {
        true
    }
    fn write_delay(&mut self) -> Duration {
        Duration::ZERO
    }
    fn write(&mut self, _: ShardId, _: &[StateChange]) -> bool {
        false
    }
    fn crash(&mut self, _: ShardId, _: &mut SimRng) {}
    fn records(&self, _: ShardId) -> Vec<Record> {
        Vec::new()
    }
}

#[test]
fn an_answer_waiting_for_a_refused_write_never_leaves_and_others_do() {
    let mut h = Harness::default();
    h.sim.set_store(Box::new(RefusingStore));
    let aor = aor(1);
    let text = h.publish_text(&aor, "", &pidf(&aor, "t1", "open", "x"));
    let out = h.feed(text.as_bytes());
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.sim.refused_writes(), 1);
    let options = h.register_text(&aor, "o-1", 1, "").replace("REGISTER", "OPTIONS");
    assert_eq!(
        status(&h.request(&options)),
        200,
        "an answer reporting no change leaves"
    );
}
