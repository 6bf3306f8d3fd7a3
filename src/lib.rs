//! camqtt: security-camera pushes to MQTT and Home Assistant.
//!
//! # Layout
//! Data flows one way: `sources/* → pipeline → spool (buffer) → sinks/*`; `docs/ARCHITECTURE.md`
//! has the picture and the reasons.
//! - [`topology`]: builds the components from the configuration, wires them, stops them in
//!   order ([`start`], [`run`]).
//! - [`event`]: the normalised model; depends on nothing else in the crate.
//! - [`sources`]: one folder per input (pure parser + thin I/O shell); [`sources::http_push`]
//!   is the camera receiver the HTTP-push sources share.
//! - [`pipeline`]: device registry, availability, filters.
//! - [`http_client`]: the one outbound HTTP client (reqwest, rustls with ring).
//! - [`spool`]: the buffer stage in front of the sinks (disk spool or memory).
//! - [`sinks`]: MQTT with Home Assistant discovery.
//! - [`telemetry`]: counters, gauges and histograms of one bridge instance.
//! - [`config`]: composes the sections each component owns (in its own `config.rs`) into
//!   the whole configuration; TOML with line numbers, environment, command line, secrets.
//! - [`broker`]: the embedded MQTT broker used when none is configured.
//! - [`addon`]: the Home Assistant add-on's options and Supervisor client.

pub mod addon;
pub mod broker;
pub mod config;
pub mod detect;
pub mod event;
pub mod health;
pub mod http_client;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod telemetry;
pub mod topology;
pub mod web;

pub use topology::{RunError, Running, default_client_id, run, start, start_with};
