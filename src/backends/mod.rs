//! Builder backends: where images are baked.

pub mod local;
