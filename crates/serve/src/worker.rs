//! The decode thread: it owns the [`Engine`] and runs its loop for as long as any row is live,
//! admitting queued requests at every step while the batch has room. Handlers talk to it
//! through a queue of jobs and get each job's tokens back on a channel of their own; a handler
//! that goes away (a client that disconnected, a stop string that matched) drops its receiver,
//! and the request leaves the batch at the next step.

use mismatch_models::engine::{Engine, Event, Request};
use mismatch_models::CausalLm;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use tokio::sync::mpsc::UnboundedSender;

/// What a job's receiver gets: tokens, or the reason the request failed.
pub type Update = Result<Event, String>;

pub struct Job {
    pub request: Request,
    pub updates: UnboundedSender<Update>,
}

/// Starts the decode thread over `model`, with at most `max_batch` rows per step (a request
/// with more choices than that runs alone).
pub fn spawn(model: &dyn CausalLm, max_batch: usize) -> anyhow::Result<mpsc::Sender<Job>> {
    let mut engine = Engine::new(model)?;
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new().name("decode".into()).spawn(move || run(&mut engine, rx, max_batch.max(1)))?;
    Ok(tx)
}

struct Live {
    updates: UnboundedSender<Update>,
    /// Choices still generating.
    rows: usize,
}

fn run(engine: &mut Engine, jobs: mpsc::Receiver<Job>, max_batch: usize) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut live: HashMap<u64, Live> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        if engine.rows() == 0 && queue.is_empty() {
            match jobs.recv() {
                Ok(j) => queue.push_back(j),
                // Every sender is gone: the server has shut down.
                Err(_) => return,
            }
        }
        queue.extend(jobs.try_iter());
        // Everything that fits joins now, prefilled together.
        let mut joining = Vec::new();
        let mut rows = engine.rows();
        while let Some(j) = queue.front() {
            if rows > 0 && rows + j.request.n > max_batch {
                break;
            }
            let j = queue.pop_front().expect("front exists");
            if j.updates.is_closed() {
                continue;
            }
            if let Err(e) = engine.check(&j.request) {
                let _ = j.updates.send(Err(e.to_string()));
                continue;
            }
            rows += j.request.n;
            joining.push((next_id, j));
            next_id += 1;
        }
        if !joining.is_empty() {
            let requests = joining.iter().map(|(id, j)| (*id, j.request.clone())).collect();
            match engine.add(requests) {
                Ok(events) => {
                    for (id, j) in joining {
                        live.insert(id, Live { updates: j.updates, rows: j.request.n });
                    }
                    deliver(engine, &mut live, events);
                }
                Err(e) => {
                    for (_, j) in joining {
                        let _ = j.updates.send(Err(e.to_string()));
                    }
                }
            }
        }
        match engine.step() {
            Ok(events) => deliver(engine, &mut live, events),
            Err(e) => {
                // The model failed mid-batch: every live request gets the error.
                for (id, l) in live.drain() {
                    let _ = l.updates.send(Err(e.to_string()));
                    let _ = engine.cancel(id);
                }
            }
        }
    }
}

/// Sends each event to its request; drops requests that finished or whose receiver is gone.
fn deliver(engine: &mut Engine, live: &mut HashMap<u64, Live>, events: Vec<Event>) {
    for e in events {
        let id = e.request;
        let Some(l) = live.get_mut(&id) else { continue };
        let last = e.finish.is_some();
        if l.updates.send(Ok(e)).is_err() {
            live.remove(&id);
            let _ = engine.cancel(id);
            continue;
        }
        if last {
            l.rows -= 1;
            if l.rows == 0 {
                live.remove(&id);
            }
        }
    }
}
