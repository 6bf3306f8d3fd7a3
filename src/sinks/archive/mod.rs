//! The `archive` sink's store: the cameras' pictures and a JSONL event log on disk, per device
//! and day, with retention by age and size and an atomically replaced `latest.jpg` per device
//! (issue 11).
//!
//! # Layout on disk
//!
//! ```text
//! <dir>/.camqtt-archive                       marker: this directory is an archive
//! <dir>/<device>/latest.jpg                   newest picture of the device (replaced atomically)
//! <dir>/<device>/latest_<category>.jpg        newest picture per category
//! <dir>/<device>/<YYYY-MM-DD>/events.jsonl    one EventRecord per line, whatever the naming
//! <dir>/<naming>                              the pictures; default
//!     <device>/<YYYY>-<MM>-<DD>/<hh><mm><ss>.<mmm>_<category>_<role>.jpg
//! ```
//!
//! `<device>` is the device id and every other device-provided string is passed through
//! [`sanitize_component`] before it becomes part of a path. Dates and times are the event's
//! camera time in the time zone given to [`Archive::open`]. A picture becomes visible only
//! once it is complete (written to a hidden temporary file, then linked into place) and never
//! replaces an existing file: a taken name gets `-1`, `-2`, … before its extension.
//!
//! # Files
//! - [`config`]: `[archive]` ([`ArchiveConfig`], [`Priority`]), checked by
//!   [`ArchiveConfig::validate`].
//! - [`naming`]: the path template ([`Naming`]) and [`sanitize_component`] (pure).
//! - [`record`]: the JSONL line ([`EventRecord`]) and its [`describe`] text (pure).
//! - [`retention`]: which files go, oldest first ([`retention::Index`], pure).
//! - [`store`]: the I/O: [`Archive`] (open, write, prune) and the read side the web server
//!   uses concurrently ([`query`], [`resolve`], [`latest`]).

pub mod config;
pub mod naming;
pub mod record;
pub mod retention;
pub mod store;

pub use config::{ArchiveConfig, Priority};
pub use naming::{Naming, sanitize_component};
pub use record::{EventRecord, ImageRecord, describe};
pub use retention::Pruned;
pub use store::{Archive, ArchiveError, Query, Written, latest, query, resolve};

#[cfg(test)]
mod tests;
