//! The task of one polled camera (the async shell): waits for the next interval or a command,
//! takes the host's connection permit, fetches with [`AuthState`], judges the answer
//! ([`answer::judge`]), keeps [`Health`], and sends what came of it to the pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use tokio::sync::{Semaphore, broadcast};
use tracing::{debug, info, warn};

use super::SOURCE;
use super::answer::{self, Picture, Refusal};
use super::auth::{AuthFailure, AuthState, Credentials, MAX_ATTEMPTS, Next};
use super::config::Target;
use super::health::{CommandLimit, Health, Trigger, Verdict};
use crate::event::{
    Category, Command, DeviceInfo, Event, Handle, HandleKind, Image, ImageRole, Message, Phase,
    Provenance, Unparsed, Via,
};
use crate::http_client::{self, FetchError};
use crate::sources::{Input, SourceContext};

/// Largest part of a refused body copied to `bridge/unparsed`.
const UNPARSED_BODY_CAP: usize = 1024;

/// Everything one camera task needs.
#[derive(Debug)]
pub struct Camera {
    /// `[[poll]] id`: the device's `Poll` handle.
    pub id: String,
    /// The device id in topics (the pipeline's slug of `id`): commands for it are ours.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// URL and its parts.
    pub target: Target,
    /// Credentials, if configured.
    pub creds: Option<Credentials>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Body size cap.
    pub max_size: usize,
    /// Category of the pictures.
    pub category: Category,
    /// The host's connection budget (shared with the other cameras of that host).
    pub budget: Arc<Semaphore>,
    /// Interval, backoff, availability.
    pub health: Health,
    /// Command rate limit.
    pub limit: CommandLimit,
}

/// How a snapshot attempt ended without a picture.
#[derive(Debug)]
enum Failed {
    /// No answer: connection, timeout, broken transfer.
    Transport(String),
    /// A 401 that ends the attempt.
    Auth(AuthFailure),
    /// An answer that is not a snapshot (reported on `bridge/unparsed`).
    Refused {
        refusal: Refusal,
        body: Vec<u8>,
        body_len: usize,
    },
}

impl Failed {
    fn reason(&self) -> &'static str {
        match self {
            Failed::Transport(_) => "unreachable",
            Failed::Auth(AuthFailure::Rejected) => "wrong-credentials",
            Failed::Auth(AuthFailure::Busy) => "auth-busy",
            Failed::Auth(AuthFailure::NoCredentials) => "credentials-required",
            Failed::Auth(AuthFailure::BadChallenge(_)) => "bad-challenge",
            Failed::Refused { refusal, .. } => refusal.reason,
        }
    }
}

impl Camera {
    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: Some(self.name.clone()),
            handles: vec![Handle {
                kind: HandleKind::Poll,
                value: self.id.clone(),
            }],
            ..DeviceInfo::default()
        }
    }

    /// Run until shutdown: a snapshot every interval (backing off after failures) and on
    /// every allowed command for this device.
    pub async fn run(mut self, ctx: SourceContext, mut commands: broadcast::Receiver<Command>) {
        let mut auth = AuthState::new();
        let periodic = !self.health.interval().is_zero();
        // The first snapshot at once, then every interval. Also with `interval = 0` (on
        // command only): the first one announces the device, with its picture and its
        // "Take snapshot" button, so that Home Assistant has a button to press; it is retried
        // with backoff until it comes (a camera that never answers is marked unreachable).
        let mut first = true;
        let mut next = tokio::time::Instant::now();
        let mut commands_open = true;
        loop {
            let trigger = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next), if periodic || first => Trigger::Interval,
                c = commands.recv(), if commands_open => match c {
                    Ok(Command::TakeSnapshot { device }) if device == self.device_id => {
                        match self.limit.check(Instant::now()) {
                            Verdict::Allow { refused } => {
                                info!(source = SOURCE, device = %self.id, refused_before = refused, "snapshot on command");
                                Trigger::Command
                            }
                            Verdict::Refuse { first } => {
                                ctx.telemetry.commands_limited.inc();
                                if first {
                                    warn!(source = SOURCE, device = %self.id, "snapshot command ignored: rate limit (command_interval); further ones until the next allowed are counted only");
                                } else {
                                    debug!(source = SOURCE, device = %self.id, "snapshot command ignored: rate limit");
                                }
                                continue;
                            }
                        }
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(source = SOURCE, device = %self.id, missed = n, "snapshot commands arrived faster than handled; some were dropped");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        commands_open = false;
                        continue;
                    }
                },
            };
            let Some(outcome) = self.snapshot(&mut auth, &ctx).await else {
                return; // shutdown while waiting for the host's permit
            };
            // On command only: the first snapshot is retried (with backoff) until one came.
            first &= outcome.is_err();
            let retry_in = self.settle(outcome, trigger, &ctx).await;
            if trigger == Trigger::Interval {
                next = tokio::time::Instant::now() + retry_in;
            }
        }
    }

    /// Take the host's permit and fetch; `None` on shutdown.
    async fn snapshot(
        &self,
        auth: &mut AuthState,
        ctx: &SourceContext,
    ) -> Option<Result<(Bytes, Picture), Failed>> {
        let permit = tokio::select! {
            () = ctx.shutdown.cancelled() => return None,
            p = self.budget.clone().acquire_owned() => p.ok()?,
        };
        ctx.telemetry.poll_requests.inc();
        let r = tokio::select! {
            () = ctx.shutdown.cancelled() => return None,
            r = self.fetch(auth) => r,
        };
        drop(permit);
        Some(r)
    }

    /// One snapshot: the request, and its retries for authentication (at most
    /// [`MAX_ATTEMPTS`]).
    async fn fetch(&self, auth: &mut AuthState) -> Result<(Bytes, Picture), Failed> {
        let client = http_client::client().map_err(|e| Failed::Transport(e.to_string()))?;
        let creds = self.creds.as_ref();
        let uri = self.target.request_target.as_str();
        let mut last = Failed::Auth(AuthFailure::BadChallenge("no attempt".into()));
        for _ in 0..MAX_ATTEMPTS {
            let (authorization, sent) = auth
                .authorization(creds, "GET", uri)
                .map_err(Failed::Auth)?;
            let mut req = client
                .get(&self.target.url)
                .timeout(self.timeout)
                .header(CACHE_CONTROL, "no-cache");
            if let Some(a) = authorization {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Failed::Transport(FetchError::from(e).to_string()))?;
            let status = resp.status().as_u16();
            if status == 401 {
                let challenges: Vec<String> = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect();
                let refs: Vec<&str> = challenges.iter().map(String::as_str).collect();
                match auth.unauthorized(&refs, sent, creds) {
                    Next::Retry => {
                        debug!(source = SOURCE, device = %self.id, scheme = auth.scheme().unwrap_or("none"), "camera sent an authentication challenge; answering it");
                        last = Failed::Auth(AuthFailure::Rejected);
                        continue;
                    }
                    Next::Fail(f) => return Err(Failed::Auth(f)),
                }
            }
            auth.succeeded(sent);
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match http_client::read_body(resp, self.max_size).await {
                Ok(b) => b,
                Err(FetchError::TooLarge(n)) => {
                    return Err(Failed::Refused {
                        refusal: Refusal {
                            reason: "too-large",
                            detail: format!("the answer is larger than max_size ({n} bytes)"),
                        },
                        body: Vec::new(),
                        body_len: n,
                    });
                }
                Err(e) => return Err(Failed::Transport(e.to_string())),
            };
            return match answer::judge(status, content_type.as_deref(), &body) {
                Ok(p) => Ok((Bytes::from(body), p)),
                Err(refusal) => Err(Failed::Refused {
                    body_len: body.len(),
                    body,
                    refusal,
                }),
            };
        }
        Err(last)
    }

    /// Act on the outcome: publish, report, log, count. Returns the wait before the next
    /// periodic attempt.
    async fn settle(
        &mut self,
        outcome: Result<(Bytes, Picture), Failed>,
        trigger: Trigger,
        ctx: &SourceContext,
    ) -> Duration {
        match outcome {
            Ok((body, picture)) => {
                let s = self.health.succeeded(trigger, &body);
                if s.back {
                    info!(source = SOURCE, device = %self.id, "camera answers again");
                }
                if s.publish {
                    let ev = self.event(body, picture, trigger);
                    send(ctx, Message::Event(Box::new(ev))).await;
                } else {
                    ctx.telemetry.poll_unchanged.inc();
                    debug!(source = SOURCE, device = %self.id, "snapshot unchanged; not published");
                    send(ctx, Message::Heartbeat(self.device())).await;
                }
                self.health.interval()
            }
            Err(failed) => {
                ctx.telemetry.poll_failures.inc();
                let f = self.health.failed();
                self.log_failure(&failed, f.streak, f.retry_in);
                if let Failed::Refused {
                    refusal,
                    body,
                    body_len,
                } = failed
                {
                    ctx.telemetry.unparsed.inc();
                    let cut = &body[..body.len().min(UNPARSED_BODY_CAP)];
                    let u = Unparsed {
                        peer: self.target.authority.clone(),
                        source: SOURCE.into(),
                        reason: refusal.reason.to_owned(),
                        detail: format!("{} (device {})", refusal.detail, self.id),
                        path: Some(self.target.request_target.clone()),
                        body: String::from_utf8_lossy(cut).into_owned(),
                        body_len,
                    };
                    send(ctx, Message::Unparsed(u)).await;
                }
                if f.unreachable {
                    warn!(source = SOURCE, device = %self.id, failures = f.streak, "camera unavailable: snapshots keep failing");
                    send(ctx, Message::Unreachable(self.device())).await;
                }
                f.retry_in
            }
        }
    }

    /// One warn line for the first failure of a streak and for a changed reason's kind; the
    /// repeats of an outage at debug.
    fn log_failure(&self, failed: &Failed, streak: u32, retry_in: Duration) {
        let reason = failed.reason();
        let retry_s = retry_in.as_secs_f64();
        let (url_path, host) = (&self.target.request_target, &self.target.authority);
        let detail = match failed {
            Failed::Transport(e) => e.clone(),
            Failed::Auth(a) => a.to_string(),
            Failed::Refused { refusal, .. } => refusal.detail.clone(),
        };
        if streak > 1 {
            debug!(source = SOURCE, device = %self.id, host = %host, reason, failures = streak, retry_in_s = retry_s, error = %detail, "snapshot failed again");
            return;
        }
        match failed {
            Failed::Auth(AuthFailure::Rejected) => {
                warn!(source = SOURCE, device = %self.id, host = %host, path = %url_path, user = self.creds.as_ref().map_or("", |c| c.username.as_str()), failures = streak, retry_in_s = retry_s, "snapshot refused: wrong user name or password (the camera answered 401 to credentials that never worked)")
            }
            Failed::Auth(AuthFailure::Busy) => {
                warn!(source = SOURCE, device = %self.id, host = %host, retry_in_s = retry_s, "snapshot refused with 401 although these credentials worked before: the camera is probably out of connections (Dahua does this); retrying with backoff")
            }
            _ => {
                warn!(source = SOURCE, device = %self.id, host = %host, path = %url_path, reason, retry_in_s = retry_s, error = %detail, "snapshot failed")
            }
        }
    }

    fn event(&self, body: Bytes, picture: Picture, trigger: Trigger) -> Event {
        let mut ev = Event::new(
            SOURCE,
            self.device(),
            self.category.clone(),
            Phase::Pulse,
            SystemTime::now(),
        );
        ev.raw_type = "snapshot".into();
        ev.warnings = picture.warnings;
        ev.images.push(Image {
            role: ImageRole::Overview,
            data: body,
            content_type: picture.content_type.into(),
            width: None,
            height: None,
            target_id: None,
        });
        ev.provenance = Some(Provenance {
            via: match trigger {
                Trigger::Interval => Via::Poll,
                Trigger::Command => Via::OnDemand,
            },
            name: Some(self.target.request_target.clone()),
            path: Some(self.target.authority.clone()),
            file: None,
        });
        ev
    }
}

/// Hand a message to the pipeline (waits while it is busy); a closed pipeline is shutdown.
async fn send(ctx: &SourceContext, msg: Message) {
    match &msg {
        Message::Event(e) => {
            ctx.telemetry.events.inc();
            ctx.telemetry.images.add(e.images.len() as u64);
            // One per camera and interval where pictures change (a clock overlay): debug.
            let on_demand = e
                .provenance
                .as_ref()
                .is_some_and(|p| p.via == Via::OnDemand);
            debug!(source = SOURCE, device = e.device.handles.first().map_or("", |h| h.value.as_str()), category = %e.category, on_demand, bytes = e.images.iter().map(|i| i.data.len()).sum::<usize>(), "snapshot published");
        }
        Message::Heartbeat(_) => ctx.telemetry.heartbeats.inc(),
        _ => {}
    }
    if ctx.tx.send(Input::new(SOURCE, msg)).await.is_err() {
        debug!(
            source = SOURCE,
            "pipeline gone; message dropped at shutdown"
        );
    }
}
