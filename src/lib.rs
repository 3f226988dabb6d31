//! bakehouse: a golden machine image factory.
//!
//! A *recipe* says which base image to start from, how to provision, clean
//! and publish it; a *build* turns it into a captured image recorded,
//! versioned, in the image *registry*. See docs/concepts.md for the concepts.

/// The Amazon States Language interpreter (its own crate, `crates/asl`).
pub use bakehouse_asl as asl;
pub mod aws;
pub mod backends;
pub mod build;
pub mod cli;
pub mod communicator;
pub mod config;
pub mod lambda;
pub mod lifecycle;
pub mod pipeline;
pub mod recipe;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod triggers;
