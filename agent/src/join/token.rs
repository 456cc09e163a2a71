//! The bootstrap token: a secret that exists only in memory and in the
//! JoinConfiguration file (mode 0600) kubeadm reads. No `Display`, no
//! `Serialize`; `Debug` redacts; [`redact`] scrubs it from kubeadm's output.

use std::fmt;

pub const REDACTED: &str = "<redacted>";

/// `[a-z0-9]{6}.[a-z0-9]{16}` (kubeadm's bootstrap token format: an id
/// that is not secret, and the secret).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({REDACTED})")
    }
}

/// Why a token file's content is not a token. Never carries the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("is empty; expected one bootstrap token (`kubeadm token create` prints one)")]
    Empty,
    #[error("holds {lines} lines; expected exactly one bootstrap token")]
    Lines { lines: usize },
    #[error(
        "does not hold a bootstrap token: expected 6 + 16 lowercase letters or digits joined by a dot \
         ([a-z0-9]{{6}}.[a-z0-9]{{16}}, as `kubeadm token create` prints), found {len} characters"
    )]
    Shape { len: usize },
}

fn lower_alnum(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

impl BootstrapToken {
    /// Parses a token file's text: one line, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<BootstrapToken, TokenFormatError> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        match lines.as_slice() {
            [] => Err(TokenFormatError::Empty),
            [one] => {
                let t = one.trim();
                match t.split_once('.') {
                    Some((id, secret)) if lower_alnum(id, 6) && lower_alnum(secret, 16) => {
                        Ok(BootstrapToken(t.to_string()))
                    }
                    _ => Err(TokenFormatError::Shape {
                        len: t.chars().count(),
                    }),
                }
            }
            many => Err(TokenFormatError::Lines { lines: many.len() }),
        }
    }

    /// The token itself: only for the JoinConfiguration file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn secret(&self) -> &str {
        self.0.split_once('.').map_or("", |(_, s)| s)
    }

    /// `text` with the token, and its secret half on its own, replaced.
    pub fn redact(&self, text: &str) -> String {
        text.replace(self.expose(), REDACTED)
            .replace(self.secret(), REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_token_and_never_shows_it() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef\n").unwrap();
        assert_eq!(t.expose(), "abcdef.0123456789abcdef");
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        assert_eq!(
            t.redact("token abcdef.0123456789abcdef, secret 0123456789abcdef"),
            "token <redacted>, secret <redacted>"
        );
    }

    #[test]
    fn rejects_what_is_not_a_token_without_echoing_it() {
        assert_eq!(BootstrapToken::parse(" \n"), Err(TokenFormatError::Empty));
        assert_eq!(
            BootstrapToken::parse("abcdef.0123456789abcdef\nabcdef.0123456789abcdef\n"),
            Err(TokenFormatError::Lines { lines: 2 })
        );
        for bad in [
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdefg",
        ] {
            let e = BootstrapToken::parse(bad).unwrap_err();
            assert!(!e.to_string().contains(bad), "{e}");
        }
    }
}
