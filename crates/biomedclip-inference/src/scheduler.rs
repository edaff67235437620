//! Which requests run together. Pure bookkeeping (no threads, no model), tested on its own.
//!
//! Every backend has at most one request in the service at a time, so the queue is bounded by
//! the number of connections, and first-come order is already fair across sessions: a session's
//! next request can only join the back of the queue. A batch takes the oldest request's kind
//! (images or texts) and gathers, in arrival order, the queued requests of that kind that fit
//! its budget: at most `max_images` images, or texts whose padded size (count × longest) stays
//! within `max_tokens`. The first request always runs, even when it alone exceeds the budget
//! (the backend already cut it to its own limits). Requests for features run in batches of their
//! own (a batch computes one output). Batches run on `lanes` (the service's model copies that run
//! at the same time); while every lane is busy, the next batch accumulates.

use biomedclip_core::model::Output;
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `count` images as the model's 8-bit RGB views.
    Images {
        count: usize,
        rgb: Vec<u8>,
    },
    Texts {
        sequences: Vec<Vec<u32>>,
    },
}

impl Payload {
    pub fn items(&self) -> usize {
        match self {
            Payload::Images { count, .. } => *count,
            Payload::Texts { sequences } => sequences.len(),
        }
    }

    fn is_images(&self) -> bool {
        matches!(self, Payload::Images { .. })
    }

    fn longest(&self) -> usize {
        match self {
            Payload::Images { .. } => 0,
            Payload::Texts { sequences } => sequences.iter().map(Vec::len).max().unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub conn: u64,
    pub id: u64,
    /// Embeddings or features: a batch computes one of them for all its requests.
    pub output: Output,
    pub payload: Payload,
}

#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The connection already has a request in the service.
    SecondRequest,
    /// The queue holds `max_queued` items already.
    Full,
}

#[derive(Debug, PartialEq)]
pub enum Cancelled {
    /// It was still queued and is gone.
    Dequeued,
    /// It is in the batch running on `lane`; `batch_all_cancelled`: every request in that batch
    /// is now cancelled, so the run may be terminated.
    Running { lane: usize, batch_all_cancelled: bool },
    /// Not here (already answered).
    Unknown,
}

pub struct Scheduler {
    queue: VecDeque<Job>,
    /// Per lane, (conn, id, cancelled) of the requests in the batch it runs.
    running: Vec<Vec<(u64, u64, bool)>>,
    pub max_images: usize,
    pub max_tokens: usize,
    pub max_queued: usize,
}

impl Scheduler {
    pub fn new(lanes: usize, max_images: usize, max_tokens: usize, max_queued: usize) -> Self {
        Scheduler {
            queue: VecDeque::new(),
            running: vec![Vec::new(); lanes.max(1)],
            max_images: max_images.max(1),
            max_tokens: max_tokens.max(1),
            max_queued,
        }
    }

    /// Requests in the batches running now.
    pub fn running_requests(&self) -> usize {
        self.running.iter().map(Vec::len).sum()
    }

    pub fn queued_items(&self) -> usize {
        self.queue.iter().map(|j| j.payload.items()).sum()
    }

    pub fn queued_requests(&self) -> usize {
        self.queue.len()
    }

    fn has_request(&self, conn: u64) -> bool {
        self.queue.iter().any(|j| j.conn == conn) || self.running.iter().flatten().any(|&(c, _, cancelled)| c == conn && !cancelled)
    }

    pub fn submit(&mut self, job: Job) -> Result<(), Refusal> {
        if self.has_request(job.conn) {
            return Err(Refusal::SecondRequest);
        }
        if !self.queue.is_empty() && self.queued_items() + job.payload.items() > self.max_queued {
            return Err(Refusal::Full);
        }
        self.queue.push_back(job);
        Ok(())
    }

    pub fn cancel(&mut self, conn: u64, id: u64) -> Cancelled {
        if let Some(pos) = self.queue.iter().position(|j| j.conn == conn && j.id == id) {
            self.queue.remove(pos);
            return Cancelled::Dequeued;
        }
        for (lane, batch) in self.running.iter_mut().enumerate() {
            if let Some(entry) = batch.iter_mut().find(|(c, i, _)| *c == conn && *i == id) {
                entry.2 = true;
                return Cancelled::Running { lane, batch_all_cancelled: batch.iter().all(|r| r.2) };
            }
        }
        Cancelled::Unknown
    }

    /// A connection went away: its queued requests are dropped and a running one cancelled.
    /// Returns the lanes whose running batch is now wholly cancelled.
    pub fn drop_connection(&mut self, conn: u64) -> Vec<usize> {
        self.queue.retain(|j| j.conn != conn);
        let mut abandoned = Vec::new();
        for (lane, batch) in self.running.iter_mut().enumerate() {
            let mut touched = false;
            for entry in batch.iter_mut().filter(|r| r.0 == conn) {
                entry.2 = true;
                touched = true;
            }
            if touched && batch.iter().all(|r| r.2) {
                abandoned.push(lane);
            }
        }
        abandoned
    }

    /// Whether the request is in the batch running on `lane` and was cancelled meanwhile.
    pub fn was_cancelled(&self, lane: usize, conn: u64, id: u64) -> bool {
        self.running[lane].iter().any(|&(c, i, cancelled)| c == conn && i == id && cancelled)
    }

    /// Takes the next batch off the queue for `lane`, which must be idle (None when the queue is
    /// empty), and marks it running there.
    pub fn next_batch(&mut self, lane: usize) -> Option<Vec<Job>> {
        debug_assert!(self.running[lane].is_empty(), "lane {lane} is still running a batch");
        let (images, output) = { let front = self.queue.front()?; (front.payload.is_images(), front.output) };
        let mut batch: Vec<Job> = Vec::new();
        let (mut items, mut longest) = (0usize, 0usize);
        let mut i = 0;
        while i < self.queue.len() {
            let p = &self.queue[i].payload;
            if p.is_images() != images || self.queue[i].output != output {
                i += 1;
                continue;
            }
            let fits = if images { items + p.items() <= self.max_images } else { (items + p.items()) * longest.max(p.longest()) <= self.max_tokens };
            if !batch.is_empty() && !fits {
                // Arrival order is kept: nothing younger jumps over a request that did not fit.
                break;
            }
            items += p.items();
            longest = longest.max(p.longest());
            batch.push(self.queue.remove(i).expect("index checked"));
        }
        self.running[lane] = batch.iter().map(|j| (j.conn, j.id, false)).collect();
        Some(batch)
    }

    /// The batch running on `lane` is done (answered or abandoned).
    pub fn finish_batch(&mut self, lane: usize) {
        self.running[lane].clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(conn: u64, count: usize) -> Job {
        Job { conn, id: conn * 100, output: Output::Embeddings, payload: Payload::Images { count, rgb: vec![0; count * 3] } }
    }

    fn txt(conn: u64, lens: &[usize]) -> Job {
        Job { conn, id: conn * 100, output: Output::Embeddings, payload: Payload::Texts { sequences: lens.iter().map(|&n| vec![1; n]).collect() } }
    }

    fn conns(batch: &[Job]) -> Vec<u64> {
        batch.iter().map(|j| j.conn).collect()
    }

    #[test]
    fn images_from_many_sessions_share_a_batch_up_to_the_cap() {
        let mut s = Scheduler::new(1, 4, 100, 1000);
        for c in 1..=6 {
            s.submit(img(c, 1)).unwrap();
        }
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![1, 2, 3, 4]);
        s.finish_batch(0);
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![5, 6]);
        s.finish_batch(0);
        assert!(s.next_batch(0).is_none());
    }

    #[test]
    fn features_and_embeddings_never_share_a_batch() {
        let mut s = Scheduler::new(1, 8, 100, 1000);
        s.submit(img(1, 1)).unwrap();
        s.submit(Job { output: Output::Features, ..img(2, 1) }).unwrap();
        s.submit(img(3, 1)).unwrap();
        s.submit(Job { output: Output::Features, ..img(4, 1) }).unwrap();
        let first = s.next_batch(0).unwrap();
        assert_eq!((conns(&first), first[0].output), (vec![1, 3], Output::Embeddings));
        s.finish_batch(0);
        let second = s.next_batch(0).unwrap();
        assert_eq!((conns(&second), second[0].output), (vec![2, 4], Output::Features));
    }

    #[test]
    fn an_oversized_request_runs_alone_and_order_is_kept() {
        let mut s = Scheduler::new(1, 4, 100, 1000);
        s.submit(img(1, 9)).unwrap();
        s.submit(img(2, 1)).unwrap();
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![1]);
        s.finish_batch(0);
        s.submit(img(3, 3)).unwrap();
        s.submit(img(4, 1)).unwrap();
        s.submit(img(5, 1)).unwrap();
        // 2 (1 image) + 3 (3 images) fill the cap of 4; 4 and 5 wait their turn.
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![2, 3]);
    }

    #[test]
    fn texts_are_capped_by_padded_tokens_and_kinds_do_not_mix() {
        let mut s = Scheduler::new(1, 32, 40, 1000);
        s.submit(txt(1, &[10, 3])).unwrap();
        s.submit(img(2, 1)).unwrap();
        s.submit(txt(3, &[5])).unwrap();
        s.submit(txt(4, &[20])).unwrap();
        // 3 texts × longest 10 = 30 fit; adding a 20-token text would pad 4 × 20 = 80.
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![1, 3]);
        s.finish_batch(0);
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![2]);
        s.finish_batch(0);
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![4]);
    }

    #[test]
    fn one_request_per_connection_and_a_bounded_queue() {
        let mut s = Scheduler::new(1, 4, 100, 3);
        s.submit(img(1, 2)).unwrap();
        assert_eq!(s.submit(img(1, 1)), Err(Refusal::SecondRequest));
        s.submit(img(2, 1)).unwrap();
        assert_eq!(s.submit(img(3, 1)), Err(Refusal::Full));
        assert_eq!(s.queued_items(), 3);
        // While its request runs, a connection still may not send another.
        s.next_batch(0).unwrap();
        assert_eq!(s.submit(img(1, 1)), Err(Refusal::SecondRequest));
    }

    #[test]
    fn cancelling_drops_queued_work_and_terminates_only_wholly_cancelled_batches() {
        let mut s = Scheduler::new(1, 2, 100, 100);
        for c in 1..=3 {
            s.submit(img(c, 1)).unwrap();
        }
        assert_eq!(s.cancel(3, 300), Cancelled::Dequeued);
        assert_eq!(s.queued_requests(), 2);
        let batch = s.next_batch(0).unwrap();
        assert_eq!(conns(&batch), vec![1, 2]);
        assert_eq!(s.cancel(1, 100), Cancelled::Running { lane: 0, batch_all_cancelled: false });
        assert!(s.was_cancelled(0, 1, 100) && !s.was_cancelled(0, 2, 200));
        // The cancelled connection may send its next request at once.
        s.submit(img(1, 1)).unwrap();
        assert_eq!(s.drop_connection(2), vec![0], "both requests of the running batch are now cancelled");
        assert_eq!(s.cancel(9, 900), Cancelled::Unknown);
        s.finish_batch(0);
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![1]);
    }

    #[test]
    fn a_dying_connection_leaves_nothing_queued() {
        let mut s = Scheduler::new(1, 2, 100, 100);
        s.submit(img(1, 1)).unwrap();
        s.submit(txt(2, &[3])).unwrap();
        assert!(s.drop_connection(1).is_empty());
        assert!(s.drop_connection(2).is_empty());
        assert_eq!(s.queued_requests(), 0);
        assert!(s.next_batch(0).is_none());
    }

    #[test]
    fn lanes_run_batches_side_by_side_and_cancel_only_their_own() {
        let mut s = Scheduler::new(2, 2, 100, 100);
        for c in 1..=5 {
            s.submit(img(c, 1)).unwrap();
        }
        assert_eq!(conns(&s.next_batch(0).unwrap()), vec![1, 2]);
        assert_eq!(conns(&s.next_batch(1).unwrap()), vec![3, 4]);
        assert_eq!(s.running_requests(), 4);
        // Cancelling one request of lane 1's batch says which lane; the other request keeps it going.
        assert_eq!(s.cancel(3, 300), Cancelled::Running { lane: 1, batch_all_cancelled: false });
        assert!(s.was_cancelled(1, 3, 300) && !s.was_cancelled(0, 3, 300));
        // A connection that goes away abandons only the lane it wholly owned.
        assert_eq!(s.drop_connection(4), vec![1]);
        assert!(!s.was_cancelled(0, 1, 100));
        s.finish_batch(1);
        // Lane 1 is free again and takes the next request while lane 0 still runs.
        assert_eq!(conns(&s.next_batch(1).unwrap()), vec![5]);
        assert_eq!(s.submit(img(1, 1)), Err(Refusal::SecondRequest), "1 is still running on lane 0");
        s.finish_batch(0);
        s.submit(img(1, 1)).unwrap();
    }
}
