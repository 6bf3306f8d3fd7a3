//! Inputs. Each source turns what a device sends into [`crate::event::Message`]s.

pub mod http_push;
pub mod viewtron;
