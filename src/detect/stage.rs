//! The detector stage of the pipeline: before routing (so the device registry records the
//! labels found, and the first discovery of a device already has their entities), each event
//! whose settings ask for it ([`DetectorConfig::effective`]) has its overview looked at by the
//! detector; the objects that pass the filters ([`filter`]) go into the event
//! ([`Detection`]), their boxes are drawn on a copy of the overview (an
//! [`ImageRole::Annotated`] image), and an event without a wanted object is suppressed when
//! its settings say so: it then counts as a heartbeat of its device (seen, nothing
//! published).
//!
//! The stage runs in the pipeline's batch (at most [`crate::pipeline::BATCH_INPUTS`] posts)
//! with up to `concurrency` pictures at the detector at once, so the cameras' replies wait
//! for it: a `200` still means "stored", with what the detector said. A detector that fails
//! (refused, timeout, error status, unreadable answer) is not asked again for `retry_after`;
//! meanwhile events go on at once, marked `detection: unavailable`, and are never suppressed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::client::Client;
use super::config::{DetectOverride, DetectorConfig, Effective, Unmatched, Zone};
use crate::event::{DetectedObject, Detection, DetectionState, Event, EventKind, Image, ImageRole};
use crate::telemetry::Telemetry;

/// The objects of `objects` that the settings want: a wanted label (all when `labels` is
/// empty), at least `min_confidence`, and the centre of the box inside the zone (when the
/// picture's size is known; `size` is `(width, height)` in pixels). Order is kept.
pub fn filter(
    objects: Vec<DetectedObject>,
    e: &Effective,
    size: Option<(u32, u32)>,
) -> Vec<DetectedObject> {
    objects
        .into_iter()
        .filter(|o| o.confidence >= e.min_confidence)
        .filter(|o| e.labels.is_empty() || e.labels.contains(&o.label))
        .filter(|o| in_zone(o, e.zone.as_ref(), size))
        .collect()
}

/// Is the centre of `o`'s box inside `zone` (fractions of a `size` picture)? True without a
/// zone or without a size.
fn in_zone(o: &DetectedObject, zone: Option<&Zone>, size: Option<(u32, u32)>) -> bool {
    let (Some(z), Some((w, h))) = (zone, size) else {
        return true;
    };
    if w == 0 || h == 0 {
        return true;
    }
    let cx = (f64::from(o.bbox.x_min) + f64::from(o.bbox.x_max)) / 2.0 / f64::from(w);
    let cy = (f64::from(o.bbox.y_min) + f64::from(o.bbox.y_max)) / 2.0 / f64::from(h);
    (z.x_min..=z.x_max).contains(&cx) && (z.y_min..=z.y_max).contains(&cy)
}

/// One picture to look at: the event's position in the batch, the picture, its settings.
struct Job {
    index: usize,
    picture: Bytes,
    settings: Effective,
}

/// The detector stage; the pipeline owns one.
pub struct Stage {
    cfg: DetectorConfig,
    client: Client,
    /// Not asked again before this, after a failure.
    resting_until: Option<Instant>,
    telemetry: Telemetry,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("kind", &self.cfg.kind)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// The stage for `cfg`, or `None` when no detector is configured. `devices` are the
    /// `[[devices]] detect` tables: the server is asked with the lowest minimum confidence
    /// any of them wants (each picture is filtered with its own afterwards). Errors: the
    /// client could not be built (a bad URL).
    pub fn new(
        cfg: &DetectorConfig,
        devices: &[DetectOverride],
        telemetry: Telemetry,
    ) -> Result<Option<Stage>, super::client::DetectError> {
        if !cfg.is_on() {
            return Ok(None);
        }
        let mut client = Client::new(cfg)?;
        let lowest = (devices.iter())
            .filter_map(|d| d.min_confidence)
            .fold(client.server_min_confidence(), f64::min);
        client = client.with_server_min_confidence(lowest);
        Ok(Some(Stage {
            client,
            cfg: cfg.clone(),
            resting_until: None,
            telemetry,
        }))
    }

    /// The picture of `ev` to look at: its overview, else its first picture.
    fn picture(ev: &Event) -> Option<&Image> {
        ev.image(ImageRole::Overview)
            .or_else(|| ev.images.iter().find(|i| i.role != ImageRole::Annotated))
    }

    /// Look at every event of `events` whose settings ask for it, in place (`detection`, the
    /// annotated picture). `overrides[i]` is the `[[devices]] detect` table of the device of
    /// `events[i]`, if any. Returns, per event, whether it is to be suppressed: the detector
    /// answered, found no wanted object, and its settings say `suppress`.
    pub async fn apply(
        &mut self,
        events: &mut [&mut Event],
        overrides: &[Option<DetectOverride>],
    ) -> Vec<bool> {
        let mut suppress = vec![false; events.len()];
        let jobs: Vec<Job> = events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| {
                if event.kind() != EventKind::Detection {
                    return None;
                }
                let device = overrides.get(index).and_then(Option::as_ref);
                let settings = self.cfg.effective(&event.category, device);
                let picture = Self::picture(event)?.data.clone();
                settings.enabled.then_some(Job {
                    index,
                    picture,
                    settings,
                })
            })
            .collect();
        if jobs.is_empty() {
            return suppress;
        }
        let answers = self.ask(&jobs).await;
        for (job, answer) in jobs.into_iter().zip(answers) {
            let size = crate::sources::jpeg::dimensions(&job.picture);
            let detection = match answer {
                Ok(objects) => Detection {
                    state: DetectionState::Ok,
                    detector: self.cfg.kind.as_str().into(),
                    objects: filter(objects, &job.settings, size),
                    error: None,
                },
                Err(error) => Detection {
                    state: DetectionState::Unavailable,
                    detector: self.cfg.kind.as_str().into(),
                    objects: Vec::new(),
                    error: Some(error),
                },
            };
            let annotated = if detection.objects.is_empty() {
                None
            } else {
                annotate(job.picture.clone(), detection.objects.clone()).await
            };
            if detection.state == DetectionState::Ok
                && detection.objects.is_empty()
                && job.settings.unmatched == Unmatched::Suppress
            {
                suppress[job.index] = true;
            }
            self.telemetry
                .detector_objects
                .add(detection.objects.len() as u64);
            let ev = &mut *events[job.index];
            if let Some(data) = annotated {
                ev.images.push(Image {
                    role: ImageRole::Annotated,
                    data,
                    content_type: "image/jpeg".into(),
                    width: size.map(|s| s.0),
                    height: size.map(|s| s.1),
                    target_id: None,
                });
            }
            ev.detection = Some(detection);
        }
        let n = suppress.iter().filter(|s| **s).count();
        self.telemetry.detector_suppressed.add(n as u64);
        suppress
    }

    /// Every job's answer, in order: the objects, or why there are none. While resting after
    /// a failure, nothing is sent.
    async fn ask(&mut self, jobs: &[Job]) -> Vec<Result<Vec<DetectedObject>, String>> {
        let now = Instant::now();
        if let Some(until) = self.resting_until
            && now < until
        {
            let left = until.duration_since(now).as_secs().max(1);
            let why = format!("detector unavailable after a failure; asked again in {left} s");
            return jobs.iter().map(|_| Err(why.clone())).collect();
        }
        // Owned pictures and client clones: the futures borrow nothing (a borrow inside the
        // stream makes the pipeline's future not `Send` for every lifetime).
        let pictures: Vec<Bytes> = jobs.iter().map(|j| j.picture.clone()).collect();
        let client = self.client.clone();
        let answers: Vec<(Result<Vec<DetectedObject>, String>, Duration)> =
            futures_util::stream::iter(pictures.into_iter().map(move |picture| {
                let client = client.clone();
                async move {
                    let started = Instant::now();
                    let r = client.detect(picture).await.map_err(|e| e.to_string());
                    (r, started.elapsed())
                }
            }))
            .buffered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let t = &self.telemetry;
        t.detector_requests.add(answers.len() as u64);
        let failed = answers.iter().find_map(|(r, _)| r.as_ref().err()).cloned();
        for (r, took) in &answers {
            match r {
                Ok(_) => t.detect.record(*took),
                Err(_) => t.detector_failures.inc(),
            }
        }
        match (failed, self.resting_until.is_some()) {
            (Some(error), was_resting) => {
                self.resting_until = Some(Instant::now() + self.cfg.retry_after);
                if !was_resting {
                    tracing::warn!(
                        detector = self.cfg.kind.as_str(),
                        %error,
                        retry_after_s = self.cfg.retry_after.as_secs(),
                        "object detector unavailable; events go on marked `detection: unavailable`"
                    );
                }
            }
            (None, true) => {
                self.resting_until = None;
                tracing::info!(
                    detector = self.cfg.kind.as_str(),
                    "object detector answers again"
                );
            }
            (None, false) => {}
        }
        answers.into_iter().map(|(r, _)| r).collect()
    }
}

/// The picture with the boxes drawn, on a blocking thread (decoding and encoding a large JPEG
/// takes tens of milliseconds); `None` (logged) when it cannot be drawn.
async fn annotate(picture: Bytes, objects: Vec<DetectedObject>) -> Option<Bytes> {
    let drawn =
        tokio::task::spawn_blocking(move || super::annotate::annotate(&picture, &objects)).await;
    match drawn {
        Ok(Ok(jpeg)) => Some(Bytes::from(jpeg)),
        Ok(Err(error)) => {
            tracing::warn!(%error, "annotated picture not drawn");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "annotated picture not drawn");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(label: &str, confidence: f64, b: [u32; 4]) -> DetectedObject {
        DetectedObject::new(label, confidence, b)
    }

    fn settings(labels: &[&str], min: f64, zone: Option<[f64; 4]>) -> Effective {
        Effective {
            enabled: true,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            min_confidence: min,
            zone: zone.map(Zone::from),
            unmatched: Unmatched::Publish,
        }
    }

    #[test]
    fn labels_confidence_and_zone() {
        let found = vec![
            obj("person", 0.9, [10, 10, 30, 90]), // centre (20, 50): left half
            obj("car", 0.8, [150, 60, 190, 90]),  // centre (170, 75): right half
            obj("person", 0.4, [150, 10, 170, 50]), // too unsure
            obj("dog", 0.95, [100, 10, 120, 30]),
        ];
        let size = Some((200, 100));
        let labels = |v: &[DetectedObject]| v.iter().map(|o| o.label.clone()).collect::<Vec<_>>();
        let all = filter(found.clone(), &settings(&[], 0.0, None), size);
        assert_eq!(all.len(), 4);
        let wanted = filter(
            found.clone(),
            &settings(&["person", "car"], 0.5, None),
            size,
        );
        assert_eq!(labels(&wanted), ["person", "car"]);
        let right_half = filter(
            found.clone(),
            &settings(&["person", "car"], 0.5, Some([0.5, 0.0, 1.0, 1.0])),
            size,
        );
        assert_eq!(labels(&right_half), ["car"]);
        // Without the picture's size a zone cannot be placed: not applied.
        let unknown = filter(
            found,
            &settings(&["car"], 0.5, Some([0.0, 0.0, 0.1, 0.1])),
            None,
        );
        assert_eq!(labels(&unknown), ["car"]);
    }
}
