//! Builder backends: where images are baked (see
//! [`crate::pipeline::BuilderBackend`]).

pub mod ec2;
pub mod local;
pub mod salt;
