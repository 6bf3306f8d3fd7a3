//! The `camqtt` command: run the bridge, parse captured posts, check a configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use camqtt::config::{self, Config, ConfigError, Overrides};
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
    Run(RunArgs),
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
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "CAMQTT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address of the Viewtron HTTP receiver [default: 0.0.0.0:5002].
    #[arg(long, env = "CAMQTT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Broker URL, mqtt://[user:pass@]host[:port]. Without one an embedded broker is started on 127.0.0.1:1883.
    #[arg(long, env = "CAMQTT_MQTT_URL", hide_env_values = true)]
    mqtt_url: Option<String>,
    /// Root of all published topics [default: camera].
    #[arg(long, env = "CAMQTT_BASE_TOPIC")]
    base_topic: Option<String>,
    /// Home Assistant discovery prefix [default: homeassistant].
    #[arg(long, env = "CAMQTT_DISCOVERY_PREFIX")]
    discovery_prefix: Option<String>,
    /// MQTT client id; must be unique per instance [default: camqtt-<host>-<receiver port>].
    #[arg(long, env = "CAMQTT_CLIENT_ID")]
    client_id: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "CAMQTT_LOG", default_value = "info", global = true)]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.cmd {
        Some(Cmd::Run(a)) => a.log_level.clone(),
        _ => cli.run.log_level.clone(),
    };
    init_logging(&log_level);
    let result = match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Run(args)) => run(args),
        Some(Cmd::Parse { files }) => parse(&files),
        Some(Cmd::CheckConfig { file }) => check_config(&file),
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
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => match config::load_file(path) {
            Ok(c) => c,
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        },
        None => Config::default(),
    };
    let problems = config.resolve_secrets(&|k| std::env::var(k).ok(), &|p| std::fs::read_to_string(p));
    if !problems.is_empty() {
        anyhow::bail!("{}", ConfigError::Invalid(problems));
    }
    config.apply(&Overrides {
        listen: args.listen,
        mqtt_url: args.mqtt_url,
        base_topic: args.base_topic,
        discovery_prefix: args.discovery_prefix,
        client_id: args.client_id,
    });
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let running = camqtt::start(config, shutdown.clone()).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            viewtron = %running.viewtron_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
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

fn parse(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for file in files {
        let out = match std::fs::read(file) {
            Ok(body) => describe_post(file, &body),
            Err(e) => {
                failed = true;
                serde_json::json!({"file": file.display().to_string(), "error": {"reason": "unreadable", "detail": e.to_string()}})
            }
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    match config::load_file(file) {
        Ok(c) => {
            println!("{}: OK", file.display());
            println!(
                "  broker: {}",
                c.mqtt
                    .url
                    .as_deref()
                    .map(redact_url)
                    .unwrap_or_else(|| format!("embedded on {}", c.mqtt.embedded_listen))
            );
            println!(
                "  viewtron receiver: {}",
                if c.viewtron.enabled {
                    c.viewtron.listen.to_string()
                } else {
                    "off".into()
                }
            );
            println!(
                "  base topic: {}, discovery prefix: {}",
                c.mqtt.base_topic, c.homeassistant.discovery_prefix
            );
            println!("  devices configured: {}", c.devices.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(problems)) => {
            println!("{}: {} problem(s)", file.display(), problems.len());
            for p in problems {
                println!("  {p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// `mqtt://user:secret@host` → `mqtt://user:***@host`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
