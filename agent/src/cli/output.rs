//! How a verb that failed before it had a report says so: one line (and
//! every located problem) on stderr for people, the common JSON document on
//! stdout with `--json`, exit 1.

use std::process::ExitCode;
use std::time::Instant;

use underlay::engine::EngineError;
use underlay::error::ErrorKind;
use underlay::profile::{Problem, ProfileError};
use underlay::report::Document;
use underlay::source::{SourceDoc, SourceError};
use underlay::system::SystemError;

use super::Common;

/// A verb's early failure, ready to print.
pub struct Failed {
    verb: &'static str,
    json: bool,
    netns: Option<String>,
    kind: ErrorKind,
    message: String,
    problems: Vec<Problem>,
    sources: Vec<SourceDoc>,
}

thread_local! {
    static STARTED: Instant = Instant::now();
}

/// Starts the clock the error document's `durations_ms.total` reads.
pub fn start_clock() {
    STARTED.with(|_| {});
}

impl Failed {
    pub fn new(c: &Common, verb: &'static str, kind: ErrorKind, message: String) -> Failed {
        Failed {
            verb,
            json: c.json,
            netns: c.netns.clone(),
            kind,
            message,
            problems: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// The sources loaded before the failure, for the JSON document.
    pub fn with_sources(mut self, sources: Vec<SourceDoc>) -> Failed {
        self.sources = sources;
        self
    }

    pub fn source(c: &Common, verb: &'static str, e: &SourceError) -> Failed {
        Failed::new(c, verb, e.kind(), e.to_string())
    }

    pub fn profile(c: &Common, verb: &'static str, e: &ProfileError) -> Failed {
        Failed {
            problems: e.problems().to_vec(),
            ..Failed::new(c, verb, e.kind(), e.to_string())
        }
    }

    pub fn engine(c: &Common, verb: &'static str, e: &EngineError) -> Failed {
        Failed::new(c, verb, e.kind(), e.to_string())
    }

    pub fn system(c: &Common, verb: &'static str, e: &SystemError) -> Failed {
        Failed::new(c, verb, e.kind(), e.to_string())
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn exit(self) -> ExitCode {
        if self.json {
            let total_ms = STARTED.with(|t| (t.elapsed().as_secs_f64() * 1e6).round() / 1e3);
            let mut doc = Document::of_error(
                self.verb,
                self.netns.as_deref(),
                self.kind,
                &self.message,
                &self.problems,
                total_ms,
            );
            doc.sources = self.sources;
            println!("{}", serde_json::to_string(&doc).unwrap_or_default());
        } else {
            eprintln!("underlay {}: error: {}", self.verb, self.message);
            if self.kind == ErrorKind::Input {
                eprintln!("nothing was changed.");
            }
        }
        ExitCode::from(1)
    }
}
