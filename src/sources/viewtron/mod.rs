//! Viewtron / TVT HTTP push source.

pub mod parse;
pub mod receiver;
