//! underlay: converges a bare-metal Linux host into a layer-3 ECMP node.
//!
//! One pipeline, one direction: profile → validate → [`desired::Desired`] →
//! observe → [`plan::plan`] (pure) → apply → verify ([`engine::run`]). Side
//! effects live behind [`system::System`].

pub mod bgp;
pub mod confirm;
pub mod desired;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod gates;
pub mod join;
pub mod nft;
pub mod observed;
pub mod plan;
pub mod profile;
pub mod render;
pub mod report;
pub mod source;
pub mod state;
pub mod system;
pub mod watch;
