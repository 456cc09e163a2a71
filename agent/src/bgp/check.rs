//! What BIRD's own parser says about a rendered config, as a located error.
//! Running `bird -p` is the system layer's (`system::linux::bird`).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// How long `bird -p` may take; it parses and exits, so this only guards against a hang.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// BIRD rejected a config. `line`/`column` point into the rendered text; `excerpt` shows the
/// rendered lines around it, numbered, so a person reads BIRD's message against what we wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdCheckError {
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// BIRD's message without the `bird: file:line:col` prefix.
    pub message: String,
    pub excerpt: String,
}

impl fmt::Display for BirdCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "BIRD rejected the config at line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "BIRD rejected the config at line {l}: ")?,
            _ => write!(f, "BIRD rejected the config: ")?,
        }
        f.write_str(&self.message)?;
        if !self.excerpt.is_empty() {
            write!(f, "\n{}", self.excerpt)?;
        }
        Ok(())
    }
}

impl std::error::Error for BirdCheckError {}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Rejected(#[from] BirdCheckError),
    #[error("running {bin} -p: {source}")]
    Run { bin: PathBuf, source: io::Error },
    #[error("{bin} -p did not finish within {timeout:?}")]
    Timeout { bin: PathBuf, timeout: Duration },
    #[error("writing the config to a temporary file {path}: {source}")]
    TempFile { path: PathBuf, source: io::Error },
}

/// Turns BIRD's complaint into a [`BirdCheckError`]. BIRD 2.0.12 prints one line,
/// `bird: <file>:<line>:<col> <message>` (from `bird -p`), or `<file>:<line>:<col> <message>`
/// (the text of a `configure` reply with code 8002); errors without a position look like
/// `bird: <message>`.
pub fn parse_bird_error(output: &str, conf_path: &str, text: &str) -> BirdCheckError {
    let first = output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let rest = first.strip_prefix("bird: ").unwrap_or(first);
    let located = rest
        .strip_prefix(conf_path)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(parse_position);
    match located {
        Some((line, column, message)) => BirdCheckError {
            line: Some(line),
            column: Some(column),
            message: message.to_string(),
            excerpt: excerpt(text, line, Some(column)),
        },
        None => BirdCheckError {
            line: None,
            column: None,
            message: rest.to_string(),
            excerpt: String::new(),
        },
    }
}

/// `12:5 message` -> (12, 5, "message").
fn parse_position(s: &str) -> Option<(u32, u32, &str)> {
    let (pos, message) = s.split_once(' ')?;
    let (line, col) = pos.split_once(':')?;
    Some((line.parse().ok()?, col.parse().ok()?, message.trim()))
}

/// The offending line with two lines of context before and one after, numbered, and a caret
/// under the column BIRD reported (1-based: the start of the token it stopped at).
pub fn excerpt(text: &str, line: u32, column: Option<u32>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || lines.is_empty() {
        return String::new();
    }
    let target = (line as usize).min(lines.len());
    let first = target.saturating_sub(2).max(1);
    let last = (target + 1).min(lines.len());
    let width = last.to_string().len();
    let mut out = String::new();
    for n in first..=last {
        let mark = if n == target { '>' } else { ' ' };
        out.push_str(&format!("{mark} {n:>width$} | {}\n", lines[n - 1]));
        if n == target {
            if let Some(c) = column.filter(|c| *c > 0) {
                let pad = " ".repeat(c as usize - 1);
                out.push_str(&format!("  {:>width$} | {pad}^\n", ""));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from BIRD 2.0.12 (`bird -p -c <path>`, stderr).
    const CONF: &str = "router id 10.0.0.1;\nprotocol device {\n}\nprotocol foo {\n}\n";

    #[test]
    fn parses_syntax_error_with_position() {
        let e = parse_bird_error(
            "bird: /tmp/x.conf:4:10 syntax error, unexpected CF_SYM_UNDEFINED\n",
            "/tmp/x.conf",
            CONF,
        );
        assert_eq!(e.line, Some(4));
        assert_eq!(e.column, Some(10));
        assert_eq!(e.message, "syntax error, unexpected CF_SYM_UNDEFINED");
        assert_eq!(
            e.excerpt,
            "  2 | protocol device {\n  3 | }\n> 4 | protocol foo {\n    |          ^\n  5 | }\n"
        );
    }

    #[test]
    fn parses_semantic_error_and_configure_reply_form() {
        // `configure` reply 8002 carries the same text without the `bird: ` prefix.
        let e = parse_bird_error(
            "/etc/bird/bird.conf:4:1 Neighbor must be configured",
            "/etc/bird/bird.conf",
            CONF,
        );
        assert_eq!((e.line, e.column), (Some(4), Some(1)));
        assert_eq!(e.message, "Neighbor must be configured");
        assert!(e.to_string().contains("line 4, column 1"));
    }

    #[test]
    fn error_without_position_keeps_message() {
        let e = parse_bird_error(
            "bird: Unable to open configuration file /x.conf: No such file or directory\n",
            "/x.conf",
            CONF,
        );
        assert_eq!(e.line, None);
        assert_eq!(
            e.message,
            "Unable to open configuration file /x.conf: No such file or directory"
        );
        assert!(e.excerpt.is_empty());
    }

    #[test]
    fn excerpt_clamps_at_edges() {
        assert_eq!(
            excerpt("a\nb\n", 1, None),
            "> 1 | a\n  2 | b\n",
            "first line, no column"
        );
        assert_eq!(excerpt("a\nb\n", 9, None), "  1 | a\n> 2 | b\n");
        assert_eq!(excerpt("", 1, None), "");
    }
}
