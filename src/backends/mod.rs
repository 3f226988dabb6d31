//! Builder backends: where images are baked (see
//! [`crate::pipeline::BuilderBackend`]).

pub mod ansible;
pub mod ec2;
pub mod local;
pub mod salt;
