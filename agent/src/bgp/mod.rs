//! The host BIRD 2 speaker: render its config, check it with BIRD's parser, swap it in, and
//! talk to the running daemon over its control socket.

pub mod check;
pub mod control;
pub mod from_desired;
pub mod params;
pub mod render;

pub use check::{parse_check, BirdCheckError, CheckError};
pub use control::{
    BfdSession, BgpState, BirdClient, ConfigureOutcome, ControlError, ProtocolStatus, Reply,
};
pub use params::{BfdParams, BgpTimers, BirdParams, BirdUplink, CalicoPeer};
pub use render::{bird_identifier, redact, render, render_with, uplink_sessions, RenderError};

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod netns_tests;
