//! Outputs. Each sink consumes [`crate::event::Routed`] messages: `mqtt` from the buffer,
//! `local` (the `archive` and the web page's live view) from the pipeline's tap.

pub mod archive;
pub mod local;
pub mod mqtt;
