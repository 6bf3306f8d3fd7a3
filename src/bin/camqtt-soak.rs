//! Soak run: a bounded load generator against the real `camqtt` binary and a real broker.
//!
//! It starts Mosquitto (or uses `--mqtt-url`) and `camqtt run` as child processes on loopback,
//! opens `--connections` camera connections (keep-alive IPC cameras; every fourth one an
//! NVR-style client: one request per TCP connection, absolute-form target, chunked body),
//! posts a mix of licence-plate reads with 100–500 KB JPEGs, faces, intrusions, traject
//! bursts, heartbeats and malformed posts for `--seconds`, subscribes to `camera/#`, and
//! counts every expected message per device (each post carries a unique `currentTime`, so loss
//! is exact). It samples the bridge's RSS every second and prints a report. Exit status 1 on
//! any loss (events or `bridge/unparsed` entries), 2 on a setup failure.
//!
//! ```sh
//! cargo build --release --bins
//! target/release/camqtt-soak --seconds 180 --connections 16
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::Parser;
use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A small valid JPEG (the repository's own fixture); larger ones get comment segments.
const SMALL_JPEG: &[u8] = include_bytes!("../../tests/fixtures/viewtron/images/overview.jpg");
const CROP_JPEG: &[u8] = include_bytes!("../../tests/fixtures/viewtron/images/plate1.jpg");
const FACE_JPEG: &[u8] = include_bytes!("../../tests/fixtures/viewtron/images/crop.jpg");

#[derive(Parser, Debug)]
#[command(about = "Bounded soak run of camqtt against a real broker (loopback only)")]
struct Args {
    /// Seconds of posting.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Camera connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Posts per second per connection (upper bound; replies pace it too).
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// The camqtt binary (default: `camqtt` next to this program).
    #[arg(long)]
    camqtt: Option<PathBuf>,
    /// Mosquitto binary used when `--mqtt-url` is not given.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Use this broker (`mqtt://127.0.0.1:port`) instead of starting Mosquitto.
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Seconds to wait for outstanding messages after posting stops.
    #[arg(long, default_value_t = 60)]
    drain: u64,
    /// Keep the work directory (bridge log, spool) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// What a post is expected to produce on MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Lpr,
    Face,
    Intrusion,
    Traject,
    Heartbeat,
    Malformed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lpr => "lpr",
            Kind::Face => "face",
            Kind::Intrusion => "intrusion",
            Kind::Traject => "traject",
            Kind::Heartbeat => "heartbeat",
            Kind::Malformed => "malformed",
        }
    }
}

/// Shared counters of the run.
#[derive(Default)]
struct Book {
    /// (device, category, time_raw) of every event whose post got its reply.
    expected: Mutex<HashSet<(String, &'static str, String)>>,
    /// Unparsed paths expected.
    expected_unparsed: Mutex<HashSet<String>>,
    /// Received: key → count.
    received: Mutex<HashMap<(String, String, String), u32>>,
    received_unparsed: Mutex<HashMap<String, u32>>,
    /// Traject summaries received per device.
    traject_msgs: AtomicU64,
    images: AtomicU64,
    image_bytes: AtomicU64,
    sent: Mutex<BTreeMap<Kind, u64>>,
    replies: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A valid JPEG of about `size` bytes: comment segments after SOI.
fn jpeg_of(size: usize, salt: u8) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    let mut n = salt;
    while out.len() + SMALL_JPEG.len() < size {
        let chunk = (size - out.len() - SMALL_JPEG.len()).clamp(16, 65_000);
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((chunk + 2) as u16).to_be_bytes());
        out.extend((0..chunk).map(|i| (i as u8).wrapping_mul(31).wrapping_add(n)));
        n = n.wrapping_add(7);
    }
    out.extend_from_slice(&SMALL_JPEG[2..]);
    out
}

fn mac_of(conn: usize) -> String {
    format!("02:00:5e:50:{:02x}:{:02x}", conn / 256, conn % 256)
}

fn dev_of(mac: &str) -> String {
    mac.replace(':', "_")
}

fn lpr_body(mac: &str, time: u64, plate: &str, overview_b64: &str, crop_b64: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlarmObj">VEHICE</smartType>
<currentTime type="tint64">{time}</currentTime>
<mac type="string"><![CDATA[{mac}]]></mac>
<deviceName type="string"><![CDATA[Soak gate]]></deviceName>
<listInfo type="list" count="2">
<item><image type="uint32">0</image><targetImageData><dataType>0</dataType><targetBase64Data>{overview_b64}</targetBase64Data></targetImageData></item>
<item><image type="uint32">1</image><plateNumber type="string"><![CDATA[{plate}]]></plateNumber><vehicleDirect>approach</vehicleDirect>
<targetImageData><dataType>0</dataType><targetBase64Data>{crop_b64}</targetBase64Data></targetImageData></item>
</listInfo>
</config>"#
    )
}

fn intrusion_body(mac: &str, time: u64) -> String {
    format!(
        r#"<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType>PEA</smartType><currentTime>{time}</currentTime><mac>{mac}</mac>
<perimeter><perInfo type="list" count="1"><item><eventId>5</eventId><targetId>9</targetId><status>SMART_START</status>
<rect><x1>200</x1><y1>200</y1><x2>400</x2><y2>800</y2></rect></item></perInfo></perimeter>
</config>"#
    )
}

fn traject_body(mac: &str, time: u64, n: u64) -> String {
    let items: String = (0..3)
        .map(|i| format!("<item><targetId>{}</targetId><rect><x1>10</x1><y1>10</y1><x2>50</x2><y2>90</y2></rect><targetType>person</targetType></item>", n * 3 + i))
        .collect();
    format!(
        r#"<config version="1.7" xmlns="http://www.ipc.com/ver10"><subscribeOption>FEATURE_RESULT</subscribeOption>
<currentTime>{time}</currentTime><mac>{mac}</mac><traject type="list" count="3">{items}</traject></config>"#
    )
}

fn nvr_face_body(mac: &str, channel: u32, time: u64, overview_b64: &str, crop_b64: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="2.0.0" xmlns="http://www.ipc.com/ver10">
<messageType>alarmData</messageType>
<deviceInfo><deviceName><![CDATA[Soak NVR]]></deviceName><ip>10.9.8.7</ip><mac><![CDATA[{mac}]]></mac><channelId>{channel}</channelId></deviceInfo>
<smartType>videoFaceDetect</smartType>
<currentTime>{time}</currentTime>
<sourceDataInfo><dataType>0</dataType><width>1280</width><height>720</height><sourceBase64Data>{overview_b64}</sourceBase64Data></sourceDataInfo>
<faceListInfo><item><targetId>12</targetId><age>middleAged</age><sex>male</sex>
<targetImageData><dataType>0</dataType><targetBase64Data>{crop_b64}</targetBase64Data></targetImageData></item></faceListInfo>
</config>"#
    )
}

fn nvr_keepalive(mac: &str) -> String {
    format!(
        "<config version=\"2.0.0\" xmlns=\"http://www.ipc.com/ver10\"><messageType>keepalive</messageType>\
         <deviceInfo><deviceName>Soak NVR</deviceName><mac>{mac}</mac></deviceInfo></config>"
    )
}

fn request(addr: SocketAddr, path: &str, body: &[u8], nvr: bool) -> Vec<u8> {
    if !nvr {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/xml\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        return r;
    }
    let mut r = format!(
        "POST http://{addr}{path} HTTP/1.1\r\nHost:{addr}\r\nContent-Type:application/soap+xml; charset=utf-8\r\nContent-Length:0\r\nTransfer-Encoding:chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(32 * 1024) {
        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// Read one Content-Length framed reply; returns whether it was `200`.
async fn read_reply(s: &mut TcpStream) -> std::io::Result<bool> {
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 1024];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < i + 4 + len {
                let n = s.read(&mut tmp).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Ok(head.starts_with("http/1.1 200"));
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

struct Images {
    overviews: Vec<String>,
    crop: String,
    face: String,
}

/// One camera connection's loop.
async fn camera(
    conn: usize,
    addr: SocketAddr,
    until: Instant,
    rate: f64,
    images: Arc<Images>,
    book: Arc<Book>,
    seq: Arc<AtomicU64>,
) {
    let nvr = conn % 4 == 3;
    let mac = mac_of(conn);
    let dev = dev_of(&mac);
    let mut stream: Option<TcpStream> = None;
    let mut n = 0u64;
    let gap = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut burst = 0u32;
    while Instant::now() < until {
        n += 1;
        let id = seq.fetch_add(1, Ordering::Relaxed);
        // Unique and plausible: now in microseconds, made unique by the global sequence.
        let time = now_us() / 1_000_000 * 1_000_000 + id % 1_000_000;
        let roll: u32 = if burst > 0 {
            100
        } else {
            rand::rng().random_range(0..100)
        };
        let (kind, path, body, expect): (Kind, String, String, Option<(String, &'static str)>) =
            if nvr {
                let channel = (n % 4) as u32 + 1;
                match roll {
                    0..70 => {
                        let ov = &images.overviews[(id as usize) % images.overviews.len()];
                        (
                            Kind::Face,
                            "/API".into(),
                            nvr_face_body(&mac, channel, time, ov, &images.face),
                            Some((format!("{dev}_ch{channel}"), "face")),
                        )
                    }
                    70..95 => (Kind::Heartbeat, "/API".into(), nvr_keepalive(&mac), None),
                    _ => (
                        Kind::Malformed,
                        format!("/soak/bad/{id}"),
                        "<config version=\"2.0.0\"><messageType>alarmData</messageType><smartType>x".into(),
                        None,
                    ),
                }
            } else {
                match roll {
                    0..40 => {
                        let ov = &images.overviews[(id as usize) % images.overviews.len()];
                        let plate = format!("S{id:07}");
                        (
                            Kind::Lpr,
                            "/API".into(),
                            lpr_body(&mac, time, &plate, ov, &images.crop),
                            Some((dev.clone(), "lpr")),
                        )
                    }
                    40..65 => (
                        Kind::Intrusion,
                        "/API".into(),
                        intrusion_body(&mac, time),
                        Some((dev.clone(), "intrusion")),
                    ),
                    65..75 => {
                        burst = 5;
                        (
                            Kind::Traject,
                            "/API".into(),
                            traject_body(&mac, time, id),
                            None,
                        )
                    }
                    75..95 => (Kind::Heartbeat, "/API".into(), String::new(), None),
                    95..100 => (
                        Kind::Malformed,
                        format!("/soak/bad/{id}"),
                        "<config version=\"1.7\"><smartType>VEHICE</smartType><listInfo><item>"
                            .into(),
                        None,
                    ),
                    _ => {
                        burst -= 1;
                        (
                            Kind::Traject,
                            "/API".into(),
                            traject_body(&mac, time, id),
                            None,
                        )
                    }
                }
            };
        let req = request(addr, &path, body.as_bytes(), nvr);
        *book.sent.lock().unwrap().entry(kind).or_default() += 1;
        let t0 = Instant::now();
        let result = async {
            if stream.is_none() {
                stream = Some(TcpStream::connect(addr).await?);
            }
            let s = stream.as_mut().expect("connected");
            s.write_all(&req).await?;
            read_reply(s).await
        };
        match tokio::time::timeout(Duration::from_secs(30), result).await {
            Ok(Ok(true)) => {
                book.replies.fetch_add(1, Ordering::Relaxed);
                book.latencies_us
                    .lock()
                    .unwrap()
                    .push(t0.elapsed().as_micros() as u64);
                if let Some((device, cat)) = expect {
                    book.expected
                        .lock()
                        .unwrap()
                        .insert((device, cat, time.to_string()));
                }
                if kind == Kind::Malformed {
                    book.expected_unparsed.lock().unwrap().insert(path);
                }
            }
            other => {
                book.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: connection {conn}: {kind:?} post failed: {other:?}");
                stream = None;
            }
        }
        if nvr {
            stream = None; // one request per connection
        }
        let spent = t0.elapsed();
        if burst == 0 && spent < gap {
            // Jitter ±50 % so that connections do not move in lockstep.
            let j = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep((gap - spent).mul_f64(j)).await;
        }
    }
}

/// Subscribe to `camera/#` and book every event and unparsed entry.
async fn subscriber(port: u16, book: Arc<Book>) -> AsyncClient {
    let mut opts = MqttOptions::new(
        format!("camqtt-soak-{}", std::process::id()),
        ("127.0.0.1".to_owned(), port),
    );
    opts.set_max_packet_size(64 << 20, 64 << 20);
    opts.set_keep_alive(10);
    let (client, mut el) = AsyncClient::builder(opts).capacity(10_000).build();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let c2 = client.clone();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = c2.try_subscribe("camera/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    book_message(&book, &p.topic, &p.payload, p.retain)
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(e) => {
                    eprintln!("soak: subscriber: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
    client
}

fn book_message(book: &Book, topic: &[u8], payload: &[u8], retain: bool) {
    let topic = String::from_utf8_lossy(topic);
    let levels: Vec<&str> = topic.split('/').collect();
    if retain {
        return; // replays from the retained store are not deliveries of this run
    }
    match levels.as_slice() {
        ["camera", "bridge", "unparsed"] => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload)
                && let Some(path) = v["path"].as_str()
            {
                *book
                    .received_unparsed
                    .lock()
                    .unwrap()
                    .entry(path.to_owned())
                    .or_default() += 1;
            }
        }
        ["camera", dev, cat, "event"] => {
            if *cat == "traject" {
                book.traject_msgs.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                let raw = v["time_raw"].as_str().unwrap_or_default().to_owned();
                *book
                    .received
                    .lock()
                    .unwrap()
                    .entry(((*dev).to_owned(), (*cat).to_owned(), raw))
                    .or_default() += 1;
            }
        }
        ["camera", _dev, _cat, "image"] => {
            book.images.fetch_add(1, Ordering::Relaxed);
            book.image_bytes
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// VmRSS or VmHWM of `pid` in KiB.
fn proc_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn wait_port(port: u16, max: Duration) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let work = std::env::temp_dir().join(format!("camqtt-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut children = Children(Vec::new());

    // Broker.
    let (mqtt_url, mqtt_port) = match &args.mqtt_url {
        Some(u) => {
            let port = u
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .ok_or("--mqtt-url needs an explicit port")?;
            (u.clone(), port)
        }
        None => {
            let port = free_port();
            let conf = work.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nlog_type error\nlog_type warning\n"),
            )
            .map_err(|e| e.to_string())?;
            let log =
                std::fs::File::create(work.join("mosquitto.log")).map_err(|e| e.to_string())?;
            let child = Command::new(&args.mosquitto)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("{}: {e}", args.mosquitto.display()))?;
            children.0.push(child);
            if !wait_port(port, Duration::from_secs(5)) {
                return Err("mosquitto did not start".into());
            }
            (format!("mqtt://127.0.0.1:{port}"), port)
        }
    };

    let book = Arc::new(Book::default());
    let sub = subscriber(mqtt_port, book.clone()).await;

    // Bridge.
    let camqtt = args.camqtt.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("camqtt")))
            .unwrap_or_else(|| PathBuf::from("camqtt"))
    });
    let listen_port = free_port();
    let config = work.join("camqtt.toml");
    std::fs::write(
        &config,
        format!("[spool]\ndir = \"{}\"\n", work.join("spool").display()),
    )
    .map_err(|e| e.to_string())?;
    let bridge_log = work.join("camqtt.log");
    let log = std::fs::File::create(&bridge_log).map_err(|e| e.to_string())?;
    let child = Command::new(&camqtt)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{listen_port}"))
        .arg("--mqtt-url")
        .arg(&mqtt_url)
        .arg("--client-id")
        .arg(format!("camqtt-soak-bridge-{listen_port}"))
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", camqtt.display()))?;
    let pid = child.id();
    children.0.push(child);
    if !wait_port(listen_port, Duration::from_secs(10)) {
        return Err(format!(
            "camqtt did not listen; log:\n{}",
            std::fs::read_to_string(&bridge_log).unwrap_or_default()
        ));
    }
    let addr: SocketAddr = format!("127.0.0.1:{listen_port}").parse().expect("addr");
    let rss_start = proc_kib(pid, "VmRSS:").unwrap_or(0);

    // Images: a pool of overviews from 100 to 500 KB, base64 once.
    let images = Arc::new(Images {
        overviews: (0..9)
            .map(|i| b64(&jpeg_of(100_000 + i * 50_000, i as u8)))
            .collect(),
        crop: b64(CROP_JPEG),
        face: b64(FACE_JPEG),
    });

    eprintln!(
        "soak: {} connections for {} s against pid {pid} (camqtt {}), broker {mqtt_url}, work dir {}",
        args.connections,
        args.seconds,
        camqtt.display(),
        work.display()
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let seq = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for conn in 0..args.connections {
        tasks.push(tokio::spawn(camera(
            conn,
            addr,
            until,
            args.rate,
            images.clone(),
            book.clone(),
            seq.clone(),
        )));
    }

    // RSS sampler, once a second while posting.
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut alive = true;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match proc_kib(pid, "VmRSS:") {
            Some(k) => rss.push((started.elapsed().as_secs_f64(), k)),
            None => {
                alive = false;
                eprintln!("soak: the bridge process is gone");
                break;
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let posted = started.elapsed();

    // Drain: wait for every expected message.
    let drain_end = Instant::now() + Duration::from_secs(args.drain);
    let missing = loop {
        let missing = {
            let exp = book.expected.lock().unwrap();
            let got = book.received.lock().unwrap();
            exp.iter()
                .filter(|(d, c, t)| !got.contains_key(&(d.clone(), (*c).to_owned(), t.clone())))
                .count()
        };
        let missing_unparsed = {
            let exp = book.expected_unparsed.lock().unwrap();
            let got = book.received_unparsed.lock().unwrap();
            exp.iter().filter(|p| !got.contains_key(*p)).count()
        };
        if (missing == 0 && missing_unparsed == 0) || Instant::now() > drain_end {
            break (missing, missing_unparsed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drain_took =
        (Instant::now() + Duration::from_secs(args.drain)).saturating_duration_since(drain_end);
    let rss_end = proc_kib(pid, "VmRSS:").unwrap_or(0);
    let hwm = proc_kib(pid, "VmHWM:").unwrap_or(0);
    alive &= rss_end > 0;

    // Report.
    let sent = book.sent.lock().unwrap().clone();
    let total_sent: u64 = sent.values().sum();
    let exp = book.expected.lock().unwrap().clone();
    let got = book.received.lock().unwrap().clone();
    let mut per_cat: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (_, c, _) in &exp {
        per_cat.entry(c).or_default().0 += 1;
    }
    let mut dups = 0u64;
    let mut unexpected = 0u64;
    for ((d, c, t), n) in &got {
        let key_c: Option<&'static str> = match c.as_str() {
            "lpr" => Some("lpr"),
            "face" => Some("face"),
            "intrusion" => Some("intrusion"),
            _ => None,
        };
        match key_c {
            Some(kc) if exp.contains(&(d.clone(), kc, t.clone())) => {
                per_cat.entry(kc).or_default().1 += 1;
                dups += u64::from(n.saturating_sub(1));
            }
            _ => unexpected += 1,
        }
    }
    let unparsed_exp = book.expected_unparsed.lock().unwrap().len();
    let unparsed_got = book.received_unparsed.lock().unwrap().clone();
    let unparsed_dups: u32 = unparsed_got.values().map(|n| n.saturating_sub(1)).sum();
    let mut lat = book.latencies_us.lock().unwrap().clone();
    lat.sort_unstable();
    let at = |frac: f64| -> u64 {
        let t = posted.as_secs_f64() * frac;
        rss.iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .map(|x| x.1)
            .unwrap_or(0)
    };
    let peak = rss.iter().map(|x| x.1).max().unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;

    println!("camqtt soak report");
    println!(
        "  duration            {:.1} s posting, drain {:.1} s, {} connections ({} NVR-style one-shot/chunked)",
        posted.as_secs_f64(),
        drain_took.as_secs_f64(),
        args.connections,
        (0..args.connections).filter(|c| c % 4 == 3).count()
    );
    let kinds: Vec<String> = sent
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    println!("  posts sent          {total_sent} ({})", kinds.join(", "));
    println!(
        "  replies             {} ok, {} failed",
        book.replies.load(Ordering::Relaxed),
        book.errors.load(Ordering::Relaxed)
    );
    for (c, (e, r)) in &per_cat {
        println!(
            "  events {c:<12} expected {e}, received {r}, lost {}",
            e - r.min(e)
        );
    }
    println!(
        "  events total        expected {}, lost {}, duplicates {dups}, unexpected {unexpected}",
        exp.len(),
        missing.0
    );
    println!(
        "  unparsed            expected {unparsed_exp}, lost {}, duplicates {unparsed_dups}",
        missing.1
    );
    println!(
        "  traject summaries   {} (from {} traject posts, rate-limited per device)",
        book.traject_msgs.load(Ordering::Relaxed),
        sent.get(&Kind::Traject).copied().unwrap_or(0)
    );
    println!(
        "  images received     {} ({:.1} MiB)",
        book.images.load(Ordering::Relaxed),
        book.image_bytes.load(Ordering::Relaxed) as f64 / 1048576.0
    );
    println!(
        "  reply latency       p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!(
        "  bridge RSS          start {:.1} MiB, 10% {:.1}, 50% {:.1}, 100% {:.1}, peak sampled {:.1}, after drain {:.1}, VmHWM {:.1} MiB",
        mib(rss_start),
        mib(at(0.1)),
        mib(at(0.5)),
        mib(at(1.0)),
        mib(peak),
        mib(rss_end),
        mib(hwm)
    );
    println!("  bridge alive        {alive}");

    // Stop the bridge gracefully and report its exit.
    let _ = sub.try_disconnect();
    let mut bridge = children.0.pop().expect("bridge child");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match bridge.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            _ => break None,
        }
    };
    if status.is_none() {
        let _ = bridge.kill();
        let _ = bridge.wait();
    }
    println!("  bridge exit         {status:?}");
    let warn_lines = std::fs::read_to_string(&bridge_log)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!(
        "  bridge log          {warn_lines} lines at warn+ ({})",
        bridge_log.display()
    );
    drop(children);
    if !args.keep && missing == (0, 0) && alive {
        let _ = std::fs::remove_dir_all(&work);
    }
    let ok = missing == (0, 0) && alive && book.errors.load(Ordering::Relaxed) == 0;
    println!("  result              {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
