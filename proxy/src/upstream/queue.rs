//! The gateway's queue in front of a saturated backend (`saturation:`):
//! requests that find every replica saturated wait here rather than in the
//! model servers' own first-come queues, and leave highest plan priority
//! first and, within a priority, one application at a time in turn, so no
//! application takes a priority's whole share. The replica is picked as a
//! request leaves (late binding), by the backend's `balance` among the
//! replicas with room. A request that waits past its product's
//! `max_queue_ms` is refused. One that finds `max_waiting` of its
//! product's requests waiting takes the place of the newest request of a
//! lower priority, else of the application with the most waiting at its
//! own priority (when that is at least two more than its own), so one
//! application's flood cannot fill the queue against the others; else it
//! is refused.
//!
//! [`FairQueue`] is the release order alone, with no clock and no lock;
//! [`GatewayQueue`] adds the waiting requests' channels and counts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use maas_store::model::Priority;
use tokio::sync::oneshot;

use super::{InFlight, Upstream};

/// Entries in release order: highest priority first; within a priority the
/// applications with entries in turn, one entry each per turn, each
/// application's entries first come, first served.
#[derive(Debug)]
pub struct FairQueue<T> {
    /// By [`level`]: high, normal, low.
    levels: [Level<T>; 3],
    len: usize,
}

#[derive(Debug)]
struct Level<T> {
    /// Applications with entries, the next to be served first.
    turn: VecDeque<Arc<str>>,
    by_application: HashMap<Arc<str>, VecDeque<(u64, T)>>,
    /// How often each application's first entry was passed over by
    /// [`FairQueue::pop_matching`] since it became first.
    passes: HashMap<Arc<str>, usize>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            turn: VecDeque::new(),
            by_application: HashMap::new(),
            passes: HashMap::new(),
        }
    }
}

/// How far [`FairQueue::pop_matching`] looks into an application's
/// entries, and how often it may pass over the first one.
pub const MATCH_WINDOW: usize = 8;

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            levels: Default::default(),
            len: 0,
        }
    }
}

fn level(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

impl<T> FairQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` (known by `id`) behind `application`'s other entries of
    /// its priority; an application with none joins the end of the turn.
    pub fn push(&mut self, priority: Priority, application: &Arc<str>, id: u64, item: T) {
        let level = &mut self.levels[level(priority)];
        let entries = level.by_application.entry(application.clone()).or_default();
        if entries.is_empty() {
            level.turn.push_back(application.clone());
        }
        entries.push_back((id, item));
        self.len += 1;
    }

    /// The next entry to release and its priority.
    pub fn pop(&mut self) -> Option<(Priority, T)> {
        self.pop_matching(|_| false)
    }

    /// As [`FairQueue::pop`], except that within the application whose
    /// turn it is, the first of its next [`MATCH_WINDOW`] entries that
    /// `fits` goes first (the request whose cached prompt is on the
    /// replica with room). Priorities and turns stay as they are, and an
    /// application's first entry is passed over at most [`MATCH_WINDOW`]
    /// times.
    pub fn pop_matching(&mut self, fits: impl Fn(&T) -> bool) -> Option<(Priority, T)> {
        for priority in Priority::ALL {
            let level = &mut self.levels[level(priority)];
            let Some(application) = level.turn.pop_front() else {
                continue;
            };
            let entries = level.by_application.get_mut(&application)?;
            let passes = level.passes.entry(application.clone()).or_default();
            let position = if *passes < MATCH_WINDOW && !entries.front().is_some_and(|(_, item)| fits(item)) {
                entries
                    .iter()
                    .take(MATCH_WINDOW)
                    .position(|(_, item)| fits(item))
                    .unwrap_or(0)
            } else {
                0
            };
            if position == 0 {
                *passes = 0;
            } else {
                *passes += 1;
            }
            let (_, item) = entries.remove(position)?;
            if entries.is_empty() {
                level.passes.remove(&application);
                level.by_application.remove(&application);
            } else {
                level.turn.push_back(application);
            }
            self.len -= 1;
            return Some((priority, item));
        }
        None
    }

    /// Takes out entry `id` (it gave up waiting), if it is still there.
    pub fn remove(&mut self, priority: Priority, application: &Arc<str>, id: u64) -> Option<T> {
        self.take(priority, application, |entries| {
            entries.iter().position(|(entry, _)| *entry == id)
        })
    }

    /// Takes out `application`'s newest entry of `priority` that `matches`.
    pub fn remove_newest(
        &mut self,
        priority: Priority,
        application: &Arc<str>,
        matches: impl Fn(&T) -> bool,
    ) -> Option<T> {
        self.take(priority, application, |entries| {
            entries.iter().rposition(|(_, item)| matches(item))
        })
    }

    fn take(
        &mut self,
        priority: Priority,
        application: &Arc<str>,
        find: impl FnOnce(&VecDeque<(u64, T)>) -> Option<usize>,
    ) -> Option<T> {
        let level = &mut self.levels[level(priority)];
        let entries = level.by_application.get_mut(application)?;
        let position = find(entries)?;
        let (_, item) = entries.remove(position)?;
        if entries.is_empty() {
            level.by_application.remove(application);
            level.passes.remove(application);
            level.turn.retain(|a| a != application);
        }
        self.len -= 1;
        Some(item)
    }
}

/// Who is asking to be admitted, and what bounds their wait.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub priority: Priority,
    pub application: Arc<str>,
    pub product: Arc<str>,
    pub max_queue: Duration,
    pub max_waiting: u32,
    /// The request body, for prefix affinity's pick at release.
    pub body: Option<Bytes>,
}

/// A request let through to a replica, counted there already.
#[derive(Debug)]
pub struct Granted {
    pub replica: usize,
    pub at_replica: InFlight,
    /// How long it waited in the queue (zero when it did not).
    pub waited: Duration,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its product's `max_waiting` requests were waiting already.
    Full,
    /// It gave its place to a request of a higher priority, or of an
    /// application with fewer requests waiting, when the queue was full.
    Displaced,
    /// It waited its product's `max_queue_ms`.
    TimedOut { waited: Duration },
}

struct Waiter {
    product: Arc<str>,
    application: Arc<str>,
    body: Option<Bytes>,
    /// Its prompt's start ([`super::affinity::prefix_key`]), with prefix
    /// affinity.
    prefix_key: Option<u64>,
    queued_at: Instant,
    decided: oneshot::Sender<Result<Granted, Refused>>,
}

#[derive(Default)]
struct Waiting {
    queue: FairQueue<Waiter>,
    /// Requests waiting, by product and priority.
    counts: HashMap<(Arc<str>, Priority), u32>,
    /// Requests waiting, by product, priority and application.
    by_application: HashMap<(Arc<str>, Priority, Arc<str>), u32>,
}

impl Waiting {
    fn count(&mut self, waiter: &Waiter, priority: Priority, delta: i32) {
        let count = self.counts.entry((waiter.product.clone(), priority)).or_default();
        *count = count.saturating_add_signed(delta);
        let key = (waiter.product.clone(), priority, waiter.application.clone());
        let count = self.by_application.entry(key.clone()).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            self.by_application.remove(&key);
        }
    }

    /// Makes room in `entry`'s full product queue by refusing the newest
    /// request of the lowest priority below `entry`'s, else of the
    /// application with the most waiting at `entry`'s own priority, if that
    /// is at least two more than `entry`'s application has. False when no
    /// request has to give way.
    fn displace_for(&mut self, entry: &QueueEntry) -> bool {
        let own = |key: &(Arc<str>, Priority, Arc<str>)| {
            key.0 == entry.product && key.1 == entry.priority && key.2 == entry.application
        };
        let mine = self
            .by_application
            .iter()
            .find(|(key, _)| own(key))
            .map_or(0, |(_, n)| *n);
        let victim = self
            .by_application
            .iter()
            .filter(|((product, priority, _), waiting)| {
                *product == entry.product
                    && (*priority < entry.priority || (*priority == entry.priority && **waiting > mine + 1))
            })
            .min_by_key(|((_, priority, _), waiting)| (*priority, std::cmp::Reverse(**waiting)))
            .map(|((_, priority, application), _)| (*priority, application.clone()));
        let Some((priority, application)) = victim else {
            return false;
        };
        let product = &entry.product;
        let Some(waiter) = self
            .queue
            .remove_newest(priority, &application, |w| w.product == *product)
        else {
            return false;
        };
        self.count(&waiter, priority, -1);
        let _ = waiter.decided.send(Err(Refused::Displaced));
        true
    }

    fn waiting_for(&self, product: &Arc<str>) -> u32 {
        Priority::ALL
            .iter()
            .filter_map(|&p| self.counts.get(&(product.clone(), p)))
            .sum()
    }
}

/// The queue of one backend (for one catalog revision).
#[derive(Default)]
pub struct GatewayQueue {
    waiting: Mutex<Waiting>,
    /// How many wait, read without the lock on every request's end.
    len: AtomicUsize,
    next_id: AtomicU64,
}

impl std::fmt::Debug for GatewayQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayQueue").field("len", &self.len()).finish()
    }
}

impl GatewayQueue {
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests waiting now, by product and priority (for `/metrics`).
    pub fn depths(&self) -> Vec<(Arc<str>, Priority, u32)> {
        let waiting = self.lock();
        let mut depths: Vec<_> = waiting.counts.iter().map(|((p, q), n)| (p.clone(), *q, *n)).collect();
        depths.sort();
        depths
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding it left plain counts behind: still usable.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request waiting in the queue. Dropped before it is let through (its
/// client went away), it leaves the queue.
pub struct QueuedRequest {
    upstream: Arc<Upstream>,
    id: u64,
    priority: Priority,
    application: Arc<str>,
    queued_at: Instant,
    deadline: tokio::time::Instant,
    decided: oneshot::Receiver<Result<Granted, Refused>>,
    done: bool,
}

/// What [`Upstream::enter`] decided.
pub enum Admission {
    Granted(Granted),
    Queued(QueuedRequest),
    Refused(Refused),
}

impl QueuedRequest {
    /// Waits to be let through, at most until its deadline.
    pub async fn wait(mut self) -> Result<Granted, Refused> {
        let answer = tokio::time::timeout_at(self.deadline, &mut self.decided).await;
        self.done = true;
        match answer {
            Ok(Ok(decided)) => decided,
            // Decided as the deadline passed: the decision is in the channel.
            _ if !self.withdraw() => self.decided.try_recv().unwrap_or_else(|_| Err(self.timed_out())),
            _ => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Refused {
        Refused::TimedOut {
            waited: self.queued_at.elapsed(),
        }
    }

    /// Takes the request out of the queue; false when it had left it.
    fn withdraw(&self) -> bool {
        let queue = &self.upstream.queue;
        let mut waiting = queue.lock();
        let Some(waiter) = waiting.queue.remove(self.priority, &self.application, self.id) else {
            return false;
        };
        waiting.count(&waiter, self.priority, -1);
        queue.len.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

impl Drop for QueuedRequest {
    fn drop(&mut self) {
        if !self.done {
            self.withdraw();
        }
    }
}

impl Upstream {
    /// Admits a request to a backend with `saturation:`: let through at
    /// once when nobody waits and a replica has room, else queued behind
    /// the others, or refused when its product's queue is full.
    pub fn enter(self: &Arc<Self>, entry: QueueEntry) -> Admission {
        if self.healthy_replicas() == 0 {
            // Every replica ejected or down: waiting would end in a 429
            // that hides an outage. Sent on by the usual pick, the request
            // fails (or not) as on a backend without a queue.
            let replica = self.pick_for(entry.body.as_deref());
            return Admission::Granted(Granted {
                replica,
                at_replica: self.begin(replica),
                waited: Duration::ZERO,
            });
        }
        let queue = &self.queue;
        let mut waiting = queue.lock();
        if waiting.queue.is_empty()
            && let Some(replica) = self.pick_with_room(entry.body.as_deref())
        {
            return Admission::Granted(Granted {
                replica,
                at_replica: self.begin(replica),
                waited: Duration::ZERO,
            });
        }
        if waiting.waiting_for(&entry.product) >= entry.max_waiting {
            if !waiting.displace_for(&entry) {
                return Admission::Refused(Refused::Full);
            }
            queue.len.fetch_sub(1, Ordering::Relaxed);
        }
        let id = queue.next_id.fetch_add(1, Ordering::Relaxed);
        let (decide, decided) = oneshot::channel();
        let queued_at = Instant::now();
        let prefix_key = self
            .backend
            .prefix_affinity
            .then(|| entry.body.as_deref().and_then(super::affinity::prefix_key))
            .flatten();
        let waiter = Waiter {
            product: entry.product,
            application: entry.application.clone(),
            body: entry.body,
            prefix_key,
            queued_at,
            decided: decide,
        };
        waiting.count(&waiter, entry.priority, 1);
        waiting.queue.push(entry.priority, &entry.application, id, waiter);
        queue.len.fetch_add(1, Ordering::Relaxed);
        drop(waiting);
        // Room may have come while nobody was there to release.
        self.release();
        Admission::Queued(QueuedRequest {
            upstream: self.clone(),
            id,
            priority: entry.priority,
            application: entry.application,
            queued_at,
            deadline: tokio::time::Instant::from_std(queued_at + entry.max_queue),
            decided,
            done: false,
        })
    }

    /// Lets waiting requests through while a replica has room, each to the
    /// replica picked for it now. Called whenever room may have come: a
    /// request ended, a replica reported its load, a health check passed.
    pub fn release(self: &Arc<Self>) {
        if self.queue.is_empty() {
            return;
        }
        // Grants whose requests went away meanwhile: dropped (and their
        // replicas' counts lowered, which releases again) after the lock.
        let mut undelivered = Vec::new();
        {
            let mut waiting = self.queue.lock();
            while !waiting.queue.is_empty() && self.any_room() {
                // Waiters have prefix keys only with prefix affinity.
                let fits = self.backend.prefix_affinity.then(|| self.prefers_a_replica_with_room());
                let matching = |w: &Waiter| w.prefix_key.zip(fits.as_ref()).is_some_and(|(key, fits)| fits(key));
                let Some((priority, waiter)) = waiting.queue.pop_matching(matching) else {
                    break;
                };
                self.queue.len.fetch_sub(1, Ordering::Relaxed);
                waiting.count(&waiter, priority, -1);
                // The room checked above went to a retry meanwhile: the
                // request is let through all the same, by the usual pick.
                let body = waiter.body.as_deref();
                let replica = self.pick_with_room(body).unwrap_or_else(|| self.pick_for(body));
                let granted = Granted {
                    replica,
                    at_replica: self.begin(replica),
                    waited: waiter.queued_at.elapsed(),
                };
                if let Err(decided) = waiter.decided.send(Ok(granted)) {
                    undelivered.push(decided);
                }
            }
        }
        drop(undelivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop().map(|(_, item)| item)).collect()
    }

    #[test]
    fn higher_priorities_leave_first_and_applications_take_turns() {
        let mut queue = FairQueue::default();
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        // Application a floods the normal priority before b and c arrive.
        for (id, item) in ["a1", "a2", "a3", "a4"].into_iter().enumerate() {
            queue.push(Priority::Normal, &a, id as u64, item);
        }
        queue.push(Priority::Normal, &b, 10, "b1");
        queue.push(Priority::Low, &c, 11, "c-low");
        queue.push(Priority::Normal, &b, 12, "b2");
        queue.push(Priority::High, &c, 13, "c-high");
        assert_eq!(queue.len(), 8);
        assert_eq!(
            drain(&mut queue),
            ["c-high", "a1", "b1", "a2", "b2", "a3", "a4", "c-low"]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_release_prefers_what_fits_within_the_turn_and_the_window() {
        let mut queue = FairQueue::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for (id, item) in ["a1", "a2", "a3-fits", "a4-fits"].into_iter().enumerate() {
            queue.push(Priority::Normal, &a, id as u64, item);
        }
        queue.push(Priority::Normal, &b, 10, "b1");
        queue.push(Priority::Low, &b, 11, "b-low-fits");
        let fits = |item: &&str| item.ends_with("-fits");
        let order: Vec<&str> = std::iter::from_fn(|| queue.pop_matching(fits).map(|(_, item)| item)).collect();
        // a's turn gives its first fitting entry; then b's; then a's again;
        // the low entry fits but waits for its priority.
        assert_eq!(order, ["a3-fits", "b1", "a4-fits", "a1", "a2", "b-low-fits"]);

        // The first entry is passed over at most MATCH_WINDOW times in a row.
        let mut queue = FairQueue::default();
        queue.push(Priority::High, &a, 0, "stuck");
        for id in 1..=(MATCH_WINDOW as u64 + 2) {
            queue.push(Priority::High, &a, id, "x-fits");
        }
        let order: Vec<&str> = std::iter::from_fn(|| queue.pop_matching(fits).map(|(_, item)| item)).collect();
        assert_eq!(order.iter().position(|item| *item == "stuck"), Some(MATCH_WINDOW));
    }

    /// One replica, saturated by one request of this proxy's.
    async fn one_place() -> Arc<Upstream> {
        let backend = maas_store::model::Backend {
            system_name: "gpu".into(),
            name: String::new(),
            description: String::new(),
            urls: vec!["http://127.0.0.1:1".into()],
            health_path: "/health".into(),
            timeouts: Default::default(),
            api_key_env: None,
            balance: Default::default(),
            prefix_affinity: false,
            health_check: None,
            saturation: Some(maas_store::model::Saturation {
                in_flight: Some(1),
                ..Default::default()
            }),
            priority_scheduling: false,
        };
        Arc::new(Upstream::resolve(&backend, None).await.unwrap())
    }

    fn entry(priority: Priority, application: &str) -> QueueEntry {
        QueueEntry {
            priority,
            application: application.into(),
            product: "chat".into(),
            max_queue: Duration::from_secs(60),
            max_waiting: 3,
            body: None,
        }
    }

    fn queued(admission: Admission) -> QueuedRequest {
        match admission {
            Admission::Queued(queued) => queued,
            _ => panic!("expected to wait"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_makes_room_for_higher_priorities_and_smaller_applications() {
        let upstream = one_place().await;
        let Admission::Granted(first) = upstream.enter(entry(Priority::Normal, "first")) else {
            panic!("the free place is taken at once");
        };
        let flood: Vec<_> = (0..3)
            .map(|_| queued(upstream.enter(entry(Priority::Normal, "flood"))))
            .collect();
        // Full: another application's request takes the flood's newest place…
        let other = queued(upstream.enter(entry(Priority::Normal, "other")));
        // …but not while the flood has only one more waiting than it.
        assert!(matches!(
            upstream.enter(entry(Priority::Normal, "other")),
            Admission::Refused(Refused::Full)
        ));
        // A higher priority takes the place of the lower one's biggest application.
        let high = queued(upstream.enter(entry(Priority::High, "vip")));
        // Nothing below low, and low applications are not ahead of anyone.
        assert!(matches!(
            upstream.enter(entry(Priority::Low, "batch")),
            Admission::Refused(Refused::Full)
        ));
        assert_eq!(upstream.queue.len(), 3);
        let [oldest, second, newest] = <[QueuedRequest; 3]>::try_from(flood).ok().unwrap();
        assert_eq!(newest.wait().await.unwrap_err(), Refused::Displaced);
        assert_eq!(second.wait().await.unwrap_err(), Refused::Displaced);
        // The place frees: high first, then the normal applications in turn.
        drop(first);
        let high = high.wait().await.unwrap();
        assert!(high.waited > Duration::ZERO);
        assert_eq!(upstream.queue.len(), 2);
        drop(high);
        let oldest = oldest.wait().await.unwrap();
        assert_eq!(upstream.queue.len(), 1);
        drop(oldest);
        other.wait().await.unwrap();
        assert!(upstream.queue.is_empty());
        assert!(upstream.queue.depths().iter().all(|(_, _, n)| *n == 0));
    }

    #[tokio::test]
    async fn a_request_past_its_wait_or_whose_client_left_is_out_of_the_queue() {
        let upstream = one_place().await;
        let Admission::Granted(_held) = upstream.enter(entry(Priority::Normal, "first")) else {
            panic!("the free place is taken at once");
        };
        let short = QueueEntry {
            max_queue: Duration::from_millis(20),
            ..entry(Priority::Normal, "impatient")
        };
        let waiting = queued(upstream.enter(short));
        let left = queued(upstream.enter(entry(Priority::Normal, "left")));
        assert_eq!(upstream.queue.len(), 2);
        drop(left);
        assert_eq!(upstream.queue.len(), 1, "a dropped request leaves at once");
        assert!(
            matches!(waiting.wait().await, Err(Refused::TimedOut { waited }) if waited >= Duration::from_millis(20))
        );
        assert!(upstream.queue.is_empty());
        assert_eq!(upstream.in_flight(0), 1, "nothing was let through");
    }

    #[tokio::test]
    async fn with_no_replica_up_nothing_waits_for_room() {
        let upstream = one_place().await;
        let Admission::Granted(_held) = upstream.enter(entry(Priority::Normal, "first")) else {
            panic!("the free place is taken at once");
        };
        assert!(matches!(
            upstream.enter(entry(Priority::Normal, "second")),
            Admission::Queued(_)
        ));
        // Its only replica refused a connection: an outage, not a full house.
        upstream.eject(0);
        assert!(matches!(
            upstream.enter(entry(Priority::Normal, "third")),
            Admission::Granted(Granted { replica: 0, .. })
        ));
    }

    #[test]
    fn a_request_that_gives_up_leaves_its_place_and_its_turn() {
        let mut queue = FairQueue::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        queue.push(Priority::Normal, &a, 1, "a1");
        queue.push(Priority::Normal, &b, 2, "b1");
        queue.push(Priority::Normal, &a, 3, "a2");
        assert_eq!(queue.remove(Priority::Normal, &b, 2), Some("b1"));
        assert_eq!(queue.remove(Priority::Normal, &b, 2), None, "only once");
        assert_eq!(queue.remove(Priority::High, &a, 1), None, "by its own priority");
        assert_eq!(queue.len(), 2);
        assert_eq!(drain(&mut queue), ["a1", "a2"]);
        // An application that comes back joins the end of the turn.
        queue.push(Priority::Low, &a, 4, "a3");
        queue.push(Priority::Low, &b, 5, "b2");
        queue.push(Priority::Low, &a, 6, "a4");
        assert_eq!(queue.remove(Priority::Low, &a, 4), Some("a3"));
        assert_eq!(drain(&mut queue), ["a4", "b2"]);
    }
}
