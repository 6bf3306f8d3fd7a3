//! The `camqtt` command: run the bridge, parse captured posts, check a configuration.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use camqtt::config::{self, Config, ConfigError, Overrides};
use camqtt::http_client;
use camqtt::sinks::mqtt::config::redact_url;
use camqtt::sinks::mqtt::payload::rfc3339;
use camqtt::sources::viewtron::parse::{Post, PostMeta, parse_post};

/// Security-camera pushes (Viewtron/TVT alarm events and their JPEGs) to MQTT and Home Assistant.
#[derive(Debug, Parser)]
#[command(name = "camqtt", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Options of `run` (also accepted without the word `run`).
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the bridge (the default).
    Run(Box<RunArgs>),
    /// Print the normalised events of captured posts as JSON (images as size and SHA-256).
    Parse {
        /// Files holding one HTTP body each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate a configuration file and list every problem with its line.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Ask a running bridge's `/healthz`; exit 0 when healthy (Docker `HEALTHCHECK`).
    Healthcheck {
        /// The bridge's receiver address [default: from --listen / CAMQTT_LISTEN, else the
        /// configuration file's viewtron.listen, else 127.0.0.1:5002; an unspecified address is
        /// asked on the loopback].
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "CAMQTT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address of the Viewtron HTTP receiver [default: 0.0.0.0:5002].
    #[arg(long, env = "CAMQTT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Broker URL, mqtt://[user:pass@]host[:port]. Repeat it (or separate URLs with commas) for the nodes of a broker cluster, tried in turn. Without one an embedded broker is started on 127.0.0.1:1883.
    #[arg(long, env = "CAMQTT_MQTT_URL", hide_env_values = true)]
    mqtt_url: Vec<String>,
    /// Root of all published topics [default: camera].
    #[arg(long, env = "CAMQTT_BASE_TOPIC")]
    base_topic: Option<String>,
    /// Home Assistant discovery prefix [default: homeassistant].
    #[arg(long, env = "CAMQTT_DISCOVERY_PREFIX")]
    discovery_prefix: Option<String>,
    /// MQTT client id; must be unique per instance [default: camqtt-<host>-<receiver port>].
    #[arg(long, env = "CAMQTT_CLIENT_ID")]
    client_id: Option<String>,
    /// Address of the embedded FTP server cameras upload snapshots to (e.g. 0.0.0.0:2121)
    /// [default: off, or the configuration file's ftp.listen].
    #[arg(long, env = "CAMQTT_FTP_LISTEN")]
    ftp_listen: Option<SocketAddr>,
    /// Address of the embedded SMTP server cameras e-mail snapshots to (e.g. 0.0.0.0:2525)
    /// [default: off, or the configuration file's smtp.listen].
    #[arg(long, env = "CAMQTT_SMTP_LISTEN")]
    smtp_listen: Option<SocketAddr>,
    /// Address of the web page, JSON API and Prometheus /metrics (e.g. 0.0.0.0:8099)
    /// [default: off, or the configuration file's web.listen].
    #[arg(long, env = "CAMQTT_WEB_LISTEN")]
    web_listen: Option<SocketAddr>,
    /// Keep every picture and an event log per device and day in this folder
    /// [default: off, or the configuration file's archive.dir].
    #[arg(long, env = "CAMQTT_ARCHIVE_DIR")]
    archive_dir: Option<PathBuf>,
    /// Object detector for camera pictures: DeepStack / CodeProject.AI base URL (e.g.
    /// http://127.0.0.1:32168) [default: off, or the configuration file's detector.url].
    #[arg(long, env = "CAMQTT_DETECTOR_URL")]
    detector_url: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "CAMQTT_LOG", default_value = "info", global = true)]
    log_level: String,
    /// Home Assistant add-on options (JSON). Default: /data/options.json when SUPERVISOR_TOKEN is set.
    #[arg(long, env = "CAMQTT_ADDON_OPTIONS")]
    addon_options: Option<PathBuf>,
}

/// glibc malloc settings for a process that allocates and frees about a megabyte per camera
/// post (`mallopt(3)`); each is left alone when the user set it, by its environment variable
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) or its tunable in
/// `GLIBC_TUNABLES` (`glibc.malloc.arena_max`, `.mmap_threshold`, `.trim_threshold`).
///
/// - One arena instead of up to eight per core. A post and its images are allocated on one
///   runtime thread and freed on another; with an arena per thread, each arena keeps its own
///   free lists of such buffers and the process holds several copies of its working set.
///   Measured on the 946 kB IPC benchmark post at 16 connections: peak RSS 76 → 63 MB, CPU per
///   event unchanged.
/// - Buffers up to [`MMAP_THRESHOLD`] come from the heap, and the heap's top is given back to
///   the kernel only when more than [`TRIM_THRESHOLD`] of it is free. glibc's own adaptive
///   thresholds gave the top back after nearly every burst and took it again moments later:
///   on the 487 kB NVR benchmark post at 16 connections, 56 `brk` calls and 3,500 page faults
///   (each a freshly zeroed page) per second; with these two settings, 0–1 and 20–75, peak
///   RSS unchanged (23–25 MB); with 500 cameras (`camqtt-soak`) 110 MiB against 94–105.
///   Setting only the trim threshold would be worse than neither:
///   it switches the adaptive mmap threshold off, and every buffer over 128 KiB became its own
///   `mmap` (CPU per event doubled).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let set = |variable: &str, tunable: &str| {
        std::env::var_os(variable).is_some()
            || tunables.contains(&format!("glibc.malloc.{tunable}="))
    };
    if !set("MALLOC_ARENA_MAX", "arena_max") {
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    // Both or neither: either one set switches glibc's adaptive thresholds off.
    if !set("MALLOC_MMAP_THRESHOLD_", "mmap_threshold")
        && !set("MALLOC_TRIM_THRESHOLD_", "trim_threshold")
    {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Allocations at least this large (bytes) get their own `mmap` ([`tune_malloc`]): larger
/// than a camera post's body and images (about 1 MB), smaller than the default body limit
/// (16 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;
/// Free memory at the heap's top (bytes) that glibc keeps rather than gives back
/// ([`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 << 20;

/// The async runtime: one worker thread unless `TOKIO_WORKER_THREADS` says otherwise (plus
/// tokio's blocking pool for the spool's files). Every hop of an event (receiver, pipeline,
/// spool, MQTT sink, the client's event loop, the reply) is a task wake-up; on one thread
/// they are queue pushes, on several they also wake the other threads, each a futex and a
/// context switch. Measured on the benchmark's 487 kB and 946 kB posts at 16 connections on
/// 2 cores: CPU per event 0.50–0.53 → 0.41 ms and 0.61–0.64 → 0.47–0.49 ms, events/s up by
/// a quarter to a half. One thread parses about 2,000 such posts a second, far more than
/// the cameras of one site send.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Other allocators (musl, macOS) keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    let mut log_level = match &cli.cmd {
        Some(Cmd::Run(a)) => a.log_level.clone(),
        _ => cli.run.log_level.clone(),
    };
    // Add-on mode: the add-on's `log_level` option, unless CAMQTT_LOG is set.
    if let (None | Some(Cmd::Run(_)), None) = (&cli.cmd, std::env::var_os("CAMQTT_LOG")) {
        let a = match &cli.cmd {
            Some(Cmd::Run(a)) => a,
            _ => &cli.run,
        };
        if let Some(level) = addon_options(a)
            .and_then(|p| camqtt::addon::read_options(&p).ok())
            .and_then(|o| o.log_level())
        {
            log_level = level;
        }
    }
    init_logging(&log_level);
    let result = match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Run(args)) => run(*args),
        Some(Cmd::Parse { files }) => parse(&files),
        Some(Cmd::CheckConfig { file }) => check_config(&file),
        Some(Cmd::Healthcheck { url, timeout }) => {
            healthcheck(url, cli.run.listen, cli.run.config.as_deref(), timeout)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("camqtt: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    // The embedded broker (rumqttd) logs every subscribe at info and ordinary disconnects as
    // errors; keep it quiet unless the filter asks for it by name.
    let mut level = if level.contains("rumqttd") {
        level.to_string()
    } else {
        format!("{level},rumqttd=off")
    };
    // libunftp (the FTP source) logs every command at info, inside spans whose fields dump
    // whole sessions, and warns again about what the source already reported; its errors are
    // enough unless it is asked for by name.
    if !level.contains("libunftp") {
        level.push_str(",libunftp=error");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    // Colours only for a person at a terminal: never in files, journald, Docker or the
    // add-on log (and not with `NO_COLOR`, https://no-color.org).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// The add-on options file when running as a Home Assistant add-on.
fn addon_options(args: &RunArgs) -> Option<PathBuf> {
    camqtt::addon::options_path(
        args.addon_options.as_deref(),
        &|k| std::env::var(k).ok(),
        &|p| p.is_file(),
    )
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let addon = addon_options(&args);
    // In add-on mode an optional full TOML in the add-on's config folder is the base.
    let config_file = args.config.clone().or_else(|| {
        let advanced = Path::new(camqtt::addon::ADVANCED_CONFIG_PATH);
        (addon.is_some() && advanced.is_file()).then(|| advanced.to_path_buf())
    });
    let mut config = match &config_file {
        Some(path) => match config::load_file(path) {
            Ok(c) => c,
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        },
        None => Config::default(),
    };
    let runtime = runtime().context("starting the async runtime")?;
    if let Some(options) = &addon {
        tracing::info!(options = %options.display(), "Home Assistant add-on mode");
        let supervisor = camqtt::addon::SupervisorSettings::from_env(&|k| std::env::var(k).ok());
        config = runtime.block_on(camqtt::addon::load(options, config, &supervisor))?;
    }
    let problems =
        config.resolve_secrets(&|k| std::env::var(k).ok(), &|p| std::fs::read_to_string(p));
    if !problems.is_empty() {
        anyhow::bail!("{}", ConfigError::Invalid(problems));
    }
    config.apply(&Overrides {
        listen: args.listen,
        mqtt_url: (!args.mqtt_url.is_empty()).then_some(args.mqtt_url),
        base_topic: args.base_topic,
        discovery_prefix: args.discovery_prefix,
        client_id: args.client_id,
        ftp_listen: args.ftp_listen,
        smtp_listen: args.smtp_listen,
        web_listen: args.web_listen,
        archive_dir: args.archive_dir,
        detector_url: args.detector_url,
    });
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let running = camqtt::start(config, shutdown.clone()).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            viewtron = %running.viewtron_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            ftp = %running.addr("ftp").map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            smtp = %running.addr("smtp").map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            web = %running.addr("web").map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            broker = %running.broker,
            "camqtt running"
        );
        let signals = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                shutdown.cancel();
            }
        });
        running.wait().await?;
        signals.abort();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}

/// The outcome of a command that prints to stdout: a reader that went away (`camqtt … | head`,
/// `EPIPE`) just ends the output early and the command exits as it would have; any other
/// write error is an error.
fn printed(written: std::io::Result<()>, code: ExitCode) -> anyhow::Result<ExitCode> {
    match written {
        Ok(()) => Ok(code),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

fn parse(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    let mut written = Ok(());
    for file in files {
        let post = match std::fs::read(file) {
            Ok(body) => describe_post(file, &body),
            Err(e) => {
                failed = true;
                serde_json::json!({"file": file.display().to_string(), "error": {"reason": "unreadable", "detail": e.to_string()}})
            }
        };
        written = writeln!(out, "{}", serde_json::to_string_pretty(&post)?);
        if written.is_err() {
            break;
        }
    }
    let written = written.and_then(|()| out.flush());
    let code = if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    printed(written, code)
}

fn describe_post(file: &Path, body: &[u8]) -> serde_json::Value {
    use serde_json::json;
    let meta = PostMeta {
        peer: None,
        received: SystemTime::now(),
    };
    let file = file.display().to_string();
    match parse_post(body, &meta) {
        Ok(Post::Heartbeat(info)) => json!({"file": file, "heartbeat": info}),
        Ok(Post::Events(events)) => {
            let events: Vec<_> = events
                .iter()
                .map(|e| {
                    json!({
                        "category": e.category,
                        "kind": e.kind(),
                        "phase": e.phase,
                        "raw_type": e.raw_type,
                        "envelope": e.envelope,
                        "config_version": e.config_version,
                        "time": rfc3339(e.time),
                        "time_source": e.time_source,
                        "time_raw": e.time_raw,
                        "device": e.device,
                        "attributes": e.attrs,
                        "warnings": e.warnings,
                        "images": e.images.iter().map(|i| json!({
                            "role": i.role,
                            "content_type": i.content_type,
                            "bytes": i.data.len(),
                            "sha256": hex(&Sha256::digest(&i.data)),
                            "width": i.width,
                            "height": i.height,
                            "target_id": i.target_id,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"file": file, "events": events})
        }
        Err(e) => json!({"file": file, "error": {"reason": e.reason(), "detail": e.to_string()}}),
    }
}

/// Where `healthcheck` asks: `--listen` / `CAMQTT_LISTEN`, else the configuration file's
/// `viewtron.listen` (`-c` / `CAMQTT_CONFIG`), else the default; an unspecified address
/// (`0.0.0.0`, `::`) is asked on the loopback of its family.
fn healthcheck_base(listen: Option<SocketAddr>, config: Option<&Path>) -> anyhow::Result<String> {
    let listen = match (listen, config) {
        (Some(a), _) => a,
        (None, Some(path)) => match config::load_file(path) {
            Ok(c) => c.viewtron.listen,
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        },
        (None, None) => config::DEFAULT_LISTEN.parse()?,
    };
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!("http://{}", SocketAddr::new(ip, listen.port())))
}

fn healthcheck(
    url: Option<String>,
    listen: Option<SocketAddr>,
    config: Option<&Path>,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let base = match url {
        Some(url) => url,
        None => healthcheck_base(listen, config)?,
    };
    let target = format!("{}/healthz", base.trim().trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        let resp = http_client::client()?
            .get(&target)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(Duration::from_secs(timeout))
            .send()
            .await?;
        let status = resp.status();
        let body = http_client::read_body(resp, http_client::MAX_JSON_BODY).await?;
        Ok::<_, http_client::FetchError>((status, body))
    });
    match answer {
        Ok((status, body)) => {
            let code = if status == reqwest::StatusCode::OK {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
            let mut out = std::io::stdout().lock();
            let written =
                writeln!(out, "{}", String::from_utf8_lossy(&body)).and_then(|()| out.flush());
            printed(written, code)
        }
        Err(e) => {
            eprintln!("camqtt: healthcheck {target}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    // What `run` reads before starting: the secrets (environment, `*_FILE`, `password_file`)
    // and the files the configuration names (TLS certificates and keys).
    let (code, lines) = match config::check_file(file) {
        Ok(c) => (ExitCode::SUCCESS, summary(file, &c)),
        Err(ConfigError::Invalid(problems)) => {
            let mut lines = vec![format!("{}: {} problem(s)", file.display(), problems.len())];
            lines.extend(problems.iter().map(|p| format!("  {p}")));
            (ExitCode::FAILURE, lines)
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|l| writeln!(out, "{l}"))
        .and_then(|()| out.flush());
    printed(written, code)
}

/// What `check-config` prints for a good configuration (never a password).
fn summary(file: &Path, c: &Config) -> Vec<String> {
    vec![
        format!("{}: OK", file.display()),
        format!(
            "  broker: {}",
            if c.mqtt.url.is_empty() {
                format!("embedded on {}", c.mqtt.embedded_listen)
            } else {
                c.mqtt
                    .url
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        format!(
            "  viewtron receiver: {}",
            match (&c.viewtron.tls, c.viewtron.enabled) {
                (_, false) => "off".to_string(),
                (None, true) => format!("{} (http)", c.viewtron.listen),
                (Some(t), true) if t.plain_http => {
                    format!("{} (https and http)", c.viewtron.listen)
                }
                (Some(_), true) => format!("{} (https only)", c.viewtron.listen),
            }
        ),
        format!(
            "  ftp server: {}",
            c.ftp.listen.map_or("off".into(), |a| a.to_string())
        ),
        format!(
            "  smtp server: {}",
            c.smtp.listen.map_or("off".into(), |a| a.to_string())
        ),
        format!(
            "  snapshot polling: {}",
            match c.poll.len() {
                0 => "off".to_string(),
                n => format!(
                    "{n} camera(s): {}",
                    c.poll
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        ),
        format!(
            "  base topic: {}, discovery prefix: {}",
            c.mqtt.base_topic, c.homeassistant.discovery_prefix
        ),
        format!("  devices configured: {}", c.devices.len()),
    ]
}
