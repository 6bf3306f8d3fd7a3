//! Outputs. Each sink consumes [`crate::event::Routed`] messages.

pub mod archive;
pub mod mqtt;
