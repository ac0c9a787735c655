//! State shared by every VM of one [`Host`]: the clock, shared data (with CAS), shared queues
//! and metrics — what Envoy keeps per process and its workers' VMs all see.
//!
//! It sits behind an `Arc<Mutex<…>>` owned by the [`Host`] value a test creates, never in a
//! global, so tests run in parallel without seeing each other.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::abi::{MetricType, Status};

/// Default wall clock: 2023-11-14T22:13:20Z, fixed so tests are deterministic.
pub const DEFAULT_NOW_SECS: u64 = 1_700_000_000;

/// A process-like host: several [`crate::Vm`]s created from it share its clock, data, queues
/// and metrics. Cloning gives another handle to the same host.
#[derive(Clone, Debug, Default)]
pub struct Host {
    pub(crate) inner: Arc<Mutex<Shared>>,
}

/// One shared-data entry: value and its CAS version (never 0).
#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    cas: u32,
}

/// A registered shared queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) vm_id: String,
    pub(crate) name: String,
    /// The VM (host-assigned number) and root context that registered it and gets notified.
    pub(crate) owner: (u64, u32),
    pub(crate) items: VecDeque<Vec<u8>>,
}

/// A defined metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Name as the module defined it.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricType,
    /// Current value of a counter or gauge (sum of samples for a histogram).
    pub value: i64,
    /// Recorded histogram samples.
    pub samples: Vec<u64>,
}

/// Everything behind the host's mutex.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) now_nanos: u64,
    /// Monotonic clock, advanced together with the wall clock but never set backwards.
    pub(crate) monotonic_nanos: u64,
    data: HashMap<String, Entry>,
    next_cas: u32,
    pub(crate) queues: Vec<Queue>,
    /// `(vm, root context, queue id)` notifications not yet delivered.
    pub(crate) queue_ready: Vec<(u64, u32, u32)>,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) next_vm: u64,
    /// Conditional writes still to be made to lose a race (see [`Host::contend`]).
    contention: u32,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            now_nanos: DEFAULT_NOW_SECS * 1_000_000_000,
            monotonic_nanos: 1_000_000_000,
            data: HashMap::new(),
            next_cas: 1,
            queues: Vec::new(),
            queue_ready: Vec::new(),
            metrics: Vec::new(),
            next_vm: 1,
            contention: 0,
        }
    }
}

impl Host {
    /// A fresh host with the default clock and nothing shared yet.
    pub fn new() -> Host {
        Host::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding the lock must not hide later assertions.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the wall clock to `secs` seconds since the Unix epoch.
    pub fn set_now(&self, secs: u64) {
        self.lock().now_nanos = secs * 1_000_000_000;
    }

    /// Current wall clock in seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        self.lock().now_nanos / 1_000_000_000
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        let mut s = self.lock();
        s.now_nanos += by.as_nanos() as u64;
        s.monotonic_nanos += by.as_nanos() as u64;
    }

    /// Reads shared data: value and CAS version.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().get_data(key)
    }

    /// Writes shared data with the ABI's semantics (`cas` 0 = unconditional).
    pub fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<u32, Status> {
        self.lock().set_data(key, value, cas)
    }

    /// Makes the next `n` conditional writes (non-zero `cas`) to existing keys lose a race:
    /// just before each, the entry is rewritten with its own value under a new version, as if
    /// another worker had written in between. Tests the module's CAS retry path, which a host
    /// running VMs one at a time would otherwise never reach.
    pub fn contend(&self, n: u32) {
        self.lock().contention = n;
    }

    /// Conditional writes that were made to lose a race and not yet consumed.
    pub fn pending_contention(&self) -> u32 {
        self.lock().contention
    }

    /// Every shared-data key, sorted.
    pub fn shared_data_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().data.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// A metric by the name the module defined it with.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.lock().metrics.iter().find(|m| m.name == name).cloned()
    }

    /// Every defined metric.
    pub fn metrics(&self) -> Vec<Metric> {
        self.lock().metrics.clone()
    }

    /// Enqueues `item` on the queue a VM registered as `(vm_id, name)` (as another process
    /// component would); the owner is told on its next [`crate::Vm::deliver_queue_ready`].
    pub fn enqueue(&self, vm_id: &str, name: &str, item: &[u8]) -> Result<(), Status> {
        let mut s = self.lock();
        let id = s.resolve_queue(vm_id, name).ok_or(Status::NotFound)?;
        match s.enqueue(id, item.to_vec()) {
            Status::Ok => Ok(()),
            other => Err(other),
        }
    }

    /// Items waiting in a queue, by `(vm_id, name)`.
    pub fn queue_len(&self, vm_id: &str, name: &str) -> Option<usize> {
        let s = self.lock();
        s.queues.iter().find(|q| q.vm_id == vm_id && q.name == name).map(|q| q.items.len())
    }
}

impl Shared {
    pub(crate) fn get_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data.get(key).map(|e| (e.value.clone(), e.cas))
    }

    /// Envoy's semantics: a non-zero `cas` must equal the entry's current version, else
    /// `CasMismatch`; `cas` 0 always writes. A write to a missing key succeeds whatever the
    /// `cas` (the entry has no version to be stale against). Returns the new version.
    pub(crate) fn set_data(&mut self, key: &str, value: &[u8], cas: u32) -> Result<u32, Status> {
        if cas != 0 && self.contention > 0 && self.data.contains_key(key) {
            self.contention -= 1;
            let version = self.bump_version();
            if let Some(entry) = self.data.get_mut(key) {
                entry.cas = version;
            }
        }
        if let Some(entry) = self.data.get(key)
            && cas != 0
            && cas != entry.cas
        {
            return Err(Status::CasMismatch);
        }
        let version = self.bump_version();
        self.data.insert(key.to_string(), Entry { value: value.to_vec(), cas: version });
        Ok(version)
    }

    /// Next CAS version: never 0 (0 means "no version" in the ABI).
    fn bump_version(&mut self) -> u32 {
        let version = self.next_cas;
        self.next_cas = self.next_cas.checked_add(1).unwrap_or(1);
        version
    }

    /// Queue ids are 1-based indexes into `queues`.
    pub(crate) fn register_queue(&mut self, vm_id: &str, name: &str, owner: (u64, u32)) -> u32 {
        if let Some(i) = self.queues.iter().position(|q| q.vm_id == vm_id && q.name == name) {
            self.queues[i].owner = owner;
            return i as u32 + 1;
        }
        self.queues.push(Queue { vm_id: vm_id.to_string(), name: name.to_string(), owner, items: VecDeque::new() });
        self.queues.len() as u32
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queues.iter().position(|q| q.vm_id == vm_id && q.name == name).map(|i| i as u32 + 1)
    }

    pub(crate) fn enqueue(&mut self, id: u32, item: Vec<u8>) -> Status {
        let Some(queue) = self.queues.get_mut((id as usize).wrapping_sub(1)) else {
            return Status::NotFound;
        };
        queue.items.push_back(item);
        let (vm, ctx) = queue.owner;
        self.queue_ready.push((vm, ctx, id));
        Status::Ok
    }

    pub(crate) fn dequeue(&mut self, id: u32) -> Result<Vec<u8>, Status> {
        let Some(queue) = self.queues.get_mut((id as usize).wrapping_sub(1)) else {
            return Err(Status::NotFound);
        };
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// Metric ids are 1-based indexes into `metrics`; defining an existing name returns its id.
    pub(crate) fn define_metric(&mut self, kind: MetricType, name: &str) -> u32 {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return i as u32 + 1;
        }
        self.metrics.push(Metric { name: name.to_string(), kind, value: 0, samples: Vec::new() });
        self.metrics.len() as u32
    }

    pub(crate) fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        self.metrics.get_mut((id as usize).wrapping_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rejects_stale_versions() {
        let host = Host::new();
        let v1 = host.set_shared_data("k", b"a", 0).unwrap();
        assert_eq!(host.shared_data("k"), Some((b"a".to_vec(), v1)));
        let v2 = host.set_shared_data("k", b"b", v1).unwrap();
        assert_ne!(v1, v2);
        assert_eq!(host.set_shared_data("k", b"c", v1), Err(Status::CasMismatch));
        assert_eq!(host.shared_data("k").unwrap().0, b"b");
        host.set_shared_data("k", b"d", 0).unwrap();
        assert_eq!(host.shared_data("k").unwrap().0, b"d");
    }

    #[test]
    fn contention_makes_a_conditional_write_lose_once() {
        let host = Host::new();
        let v1 = host.set_shared_data("k", b"a", 0).unwrap();
        host.contend(1);
        assert_eq!(host.set_shared_data("k", b"b", v1), Err(Status::CasMismatch));
        let (value, v2) = host.shared_data("k").unwrap();
        assert_eq!(value, b"a");
        assert!(host.set_shared_data("k", b"b", v2).is_ok());
        assert_eq!(host.pending_contention(), 0);
    }

    #[test]
    fn queues_notify_their_owner() {
        let mut s = Shared::default();
        let id = s.register_queue("vm", "q", (7, 1));
        assert_eq!(s.resolve_queue("vm", "q"), Some(id));
        assert_eq!(s.resolve_queue("other", "q"), None);
        assert_eq!(s.dequeue(id), Err(Status::Empty));
        assert_eq!(s.enqueue(id, b"x".to_vec()), Status::Ok);
        assert_eq!(s.queue_ready, vec![(7, 1, id)]);
        assert_eq!(s.dequeue(id), Ok(b"x".to_vec()));
        assert_eq!(s.enqueue(99, Vec::new()), Status::NotFound);
    }
}
