//! Object detection on camera pictures (issue 12): the pipeline hands each event's overview to
//! an object detector people already run, DeepStack / CodeProject.AI (`POST
//! /v1/vision/detection`) or DOODS2 (`POST /detect`), keeps the objects that pass the filters
//! (labels, confidence, zone), draws their boxes on a copy of the picture, and suppresses or
//! marks events as configured ([`config`]).

pub mod annotate;
pub mod client;
pub mod config;
pub mod stage;

pub use config::{DetectOverride, DetectorConfig, DetectorKind, Effective, Unmatched, Zone};
