//! bakehouse: a golden machine image factory.
//!
//! A *recipe* says which base image to start from, how to provision, clean
//! and publish it; a *build* turns it into a captured image recorded,
//! versioned, in the image *registry*. See DESIGN.md for the concepts.

pub mod asl;
pub mod aws;
pub mod backends;
pub mod build;
pub mod cli;
pub mod config;
pub mod lambda;
pub mod lifecycle;
pub mod pipeline;
pub mod recipe;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod triggers;
