//! The host BIRD 2 speaker: render its config, check it with BIRD's parser, and speak its
//! control protocol (commands and the parsing of replies; the socket itself is in system/).

pub mod check;
pub mod control;
pub mod from_desired;
pub mod names;
pub mod params;
pub mod render;

pub use check::{BirdCheckError, CheckError};
pub use control::{
    BfdSession, BgpDetail, BgpState, Capabilities, ConfigureOutcome, ControlError, ProtocolStatus,
    Reply, RestartCapability,
};
pub use params::{
    BfdParams, BgpTimers, BirdParams, BirdUplink, CalicoPeer, GracefulRestartParams, LogTarget,
};
pub use render::{bird_identifier, redact, render, uplink_sessions, RenderError};

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod netns_tests;
