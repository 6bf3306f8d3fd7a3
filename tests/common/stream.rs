//! A stream of licence-plate events from several cameras, each posting over one keep-alive
//! connection as fast as the bridge answers, every plate unique; and the count of what arrived.
//!
//! Plates are `<tag><camera>N<sequence>` (`A2N000041`: instance tag `A`, camera 2, its 42nd
//! post), so [`Tally`] can check the order per camera.
//!
//! Usage:
//! ```ignore
//! let stream = common::stream::Stream::start(bridge.addr, 'A', 3);
//! // ... break something ...
//! let replied = stream.stop().await;            // plates answered 200, per camera in order
//! let tally = Tally::of(&replied, &plates_in_arrival_order);
//! assert!(tally.missing.is_empty());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::Collector;
use super::camera::{self, image, post_keep_alive};

/// Cameras posting unique plates until [`Stream::stop`].
pub struct Stream {
    replied: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stream {
    /// `cameras` cameras (MACs `58:5b:69:fd:<tag>:<n>`) posting IPC LPR events with small
    /// pictures to `addr`. A post that is not answered 200 (bridge busy, connection closed)
    /// is not counted; the camera reconnects and goes on with its next plate.
    pub fn start(addr: SocketAddr, tag: char, cameras: usize) -> Stream {
        let overview = image("overview.jpg");
        let crop = image("crop.jpg");
        let replied: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..cameras)
            .map(|c| {
                let (overview, crop, replied, stop) = (
                    overview.clone(),
                    crop.clone(),
                    replied.clone(),
                    stop.clone(),
                );
                let mac = format!("58:5b:69:fd:{:02x}:{c:02x}", tag as u32 & 0xff);
                tokio::spawn(async move {
                    let mut conn: Option<TcpStream> = None;
                    for i in 0u32.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if conn.is_none() {
                            conn = TcpStream::connect(addr).await.ok();
                        }
                        let Some(s) = conn.as_mut() else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let plate = format!("{tag}{c}N{i:06}");
                        let body = camera::ipc_lpr(&mac, &plate, &overview, &crop);
                        match post_keep_alive(s, &body).await {
                            Ok(200) => replied.lock().unwrap().push(plate),
                            _ => conn = None,
                        }
                    }
                })
            })
            .collect();
        Stream {
            replied,
            stop,
            tasks,
        }
    }

    /// Plates answered 200 so far.
    pub fn replied_now(&self) -> Vec<String> {
        self.replied.lock().unwrap().clone()
    }

    /// Stop posting (each camera finishes the post under way) and return every plate
    /// answered 200.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        self.replied.lock().unwrap().clone()
    }
}

/// Plates of the LPR events under topic root `base` that `col` received, in arrival order,
/// each with its arrival time.
pub fn arrivals(col: &Collector, base: &str) -> Vec<(String, Instant)> {
    col.all()
        .iter()
        .filter(|m| m.topic.starts_with(base) && m.topic.ends_with("/lpr/event"))
        .filter_map(|m| Some((m.json()["plate"].as_str()?.to_owned(), m.at)))
        .collect()
}

/// Wait until `col` holds at least `n` LPR events under `base`; panics after `max`.
pub async fn wait_arrivals(col: &Collector, base: &str, n: usize, max: Duration, what: &str) {
    let end = Instant::now() + max;
    while arrivals(col, base).len() < n {
        assert!(
            Instant::now() < end,
            "{what}: fewer than {n} events within {max:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(tag + camera, sequence)` of a plate from [`Stream`]; `None` for another plate.
pub fn plate_key(plate: &str) -> Option<(String, u32)> {
    let (camera, seq) = plate.split_once('N')?;
    Some((camera.to_owned(), seq.parse().ok()?))
}

/// What arrived, compared with what was answered 200.
#[derive(Debug)]
pub struct Tally {
    /// Plates answered 200.
    pub posted: usize,
    /// Distinct plates that arrived.
    pub delivered: usize,
    /// Arrivals beyond the first of their plate (at-least-once replays).
    pub duplicates: usize,
    /// Plates answered 200 that never arrived.
    pub missing: Vec<String>,
    /// Cameras whose plates first arrived out of posting order: (camera, plate, the plate
    /// before it).
    pub out_of_order: Vec<(String, String, String)>,
}

impl Tally {
    /// Compare `replied` with `arrived` (plates in the order a subscriber received them).
    pub fn of(replied: &[String], arrived: &[String]) -> Tally {
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<String, (u32, String)> = BTreeMap::new();
        let mut out_of_order = Vec::new();
        let mut duplicates = 0;
        for p in arrived {
            if !seen.insert(p.clone()) {
                duplicates += 1;
                continue;
            }
            let Some((camera, seq)) = plate_key(p) else {
                continue;
            };
            if let Some((before, plate)) = last.get(&camera)
                && *before >= seq
            {
                out_of_order.push((camera.clone(), p.clone(), plate.clone()));
            }
            last.insert(camera, (seq, p.clone()));
        }
        Tally {
            posted: replied.len(),
            delivered: seen.len(),
            duplicates,
            missing: replied
                .iter()
                .filter(|p| !seen.contains(*p))
                .cloned()
                .collect(),
            out_of_order,
        }
    }
}
