//! HTTPS GET for remote sources: reqwest's blocking client over rustls (the
//! OS trust store, or only the CA bundle given), bounded in every dimension:
//! connect and per-attempt timeouts, a few attempts with exponential backoff
//! and jitter, a size cap, at most [`MAX_REDIRECTS`] redirects and never to
//! anything but https. The blocking client runs its own runtime on its own
//! thread; nothing async leaks out.
//!
//! Worst-case time: `attempts × timeout + Σ backoff` (each backoff at most
//! `min(backoff_max, backoff × 2^(n-1))`). Logged: the URL without its
//! query string and user info, attempts and errors; never the body.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::{remote, FetchError};

pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Per attempt: connect, TLS, request, headers and body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub attempts: u32,
    /// The first backoff; doubles per attempt up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub max_bytes: usize,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            max_bytes: crate::source::MAX_BYTES,
        }
    }
}

impl FetchSettings {
    /// The longest a fetch can take, retries included (jitter only shortens).
    pub fn bound(&self) -> Duration {
        let waits: Duration = (1..self.attempts.max(1))
            .map(|n| backoff_cap(n, self.backoff, self.backoff_max))
            .sum();
        self.timeout * self.attempts.max(1) + waits
    }
}

fn backoff_cap(n: u32, base: Duration, max: Duration) -> Duration {
    base.saturating_mul(1u32 << (n - 1).min(16)).min(max)
}

/// The wait after failed attempt `n` (1-based): "equal jitter", uniformly
/// in [cap/2, cap], so retries of a rack that booted together spread out
/// but each still gives the network time to come up.
pub fn backoff_delay(n: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let cap = backoff_cap(n, base, max);
    cap / 2 + cap.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

/// A redirect the policy refused; found again in the error's source chain.
#[derive(Debug)]
struct RedirectRefused(FetchError);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RedirectRefused {}

pub struct Fetcher {
    client: reqwest::blocking::Client,
    s: FetchSettings,
}

/// Reads a PEM bundle: every certificate in it becomes a trust anchor.
pub fn load_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

impl Fetcher {
    /// With `ca`, only those certificates are trusted (like curl's
    /// --cacert); without, the OS trust store (/etc/ssl/certs).
    pub fn new(
        s: FetchSettings,
        ca: Option<(PathBuf, Vec<reqwest::Certificate>)>,
    ) -> Result<Fetcher, String> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                let e = RedirectRefused(FetchError::TooManyRedirects(MAX_REDIRECTS));
                attempt.error(e)
            } else if attempt.url().scheme() != "https" {
                let to = remote::display(attempt.url());
                attempt.error(RedirectRefused(FetchError::InsecureRedirect { to }))
            } else {
                attempt.follow()
            }
        });
        let mut b = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("underlay/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(s.connect_timeout)
            .timeout(s.timeout)
            .redirect(policy);
        if let Some((_, certs)) = ca {
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| chain(&e.without_url()))?;
        Ok(Fetcher { client, s })
    }

    pub fn get(&self, url: &url::Url) -> Result<Vec<u8>, FetchError> {
        let shown = remote::display(url);
        let attempts = self.s.attempts.max(1);
        let mut last = FetchError::Unreachable("no attempt made".into());
        for n in 1..=attempts {
            tracing::info!(url = %shown, attempt = n, of = attempts, "fetching");
            match self.once(url) {
                Ok(bytes) => {
                    tracing::info!(url = %shown, bytes = bytes.len(), "fetched");
                    return Ok(bytes);
                }
                Err((e, false)) => {
                    tracing::warn!(url = %shown, error = %e, "fetch refused; not retrying");
                    return Err(e);
                }
                Err((e, true)) => {
                    if n < attempts {
                        let wait =
                            backoff_delay(n, self.s.backoff, self.s.backoff_max, fastrand::f64());
                        tracing::warn!(url = %shown, attempt = n, error = %e, retry_in_ms = wait.as_millis() as u64, "fetch failed; retrying");
                        std::thread::sleep(wait);
                    } else {
                        tracing::warn!(url = %shown, attempt = n, error = %e, "fetch failed; no attempts left");
                    }
                    last = e;
                }
            }
        }
        Err(match last {
            FetchError::Unreachable(m) => {
                FetchError::Unreachable(format!("{m} (after {attempts} attempts)"))
            }
            other => other,
        })
    }

    /// One attempt; the bool says whether another may help.
    fn once(&self, url: &url::Url) -> Result<Vec<u8>, (FetchError, bool)> {
        let resp = self
            .client
            .get(url.clone())
            .send()
            .map_err(|e| self.classify(e))?;
        let status = resp.status();
        if !status.is_success() {
            let code = status.as_u16();
            let retry = code == 408 || code == 429 || status.is_server_error();
            return Err((FetchError::Status(code), retry));
        }
        let max = self.s.max_bytes;
        if resp.content_length().is_some_and(|l| l > max as u64) {
            return Err((FetchError::TooLarge { limit: max }, false));
        }
        let mut body = Vec::new();
        resp.take(max as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                (
                    FetchError::Unreachable(format!("reading the body: {}", io_chain(&e))),
                    true,
                )
            })?;
        if body.len() > max {
            return Err((FetchError::TooLarge { limit: max }, false));
        }
        Ok(body)
    }

    fn classify(&self, e: reqwest::Error) -> (FetchError, bool) {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(r) = s.downcast_ref::<RedirectRefused>() {
                return (r.0.clone(), false);
            }
            src = s.source();
        }
        if e.is_timeout() {
            return (
                FetchError::Unreachable(format!(
                    "timed out (limit {} s per attempt)",
                    self.s.timeout.as_secs_f64()
                )),
                true,
            );
        }
        let msg = chain(&e.without_url());
        let hint = if msg.contains("certificate") || msg.contains("UnknownIssuer") {
            "; for a private provisioning CA pass --ca-file or underlay.ca="
        } else {
            ""
        };
        (FetchError::Unreachable(format!("{msg}{hint}")), true)
    }
}

/// An error and its causes on one line (reqwest's top message alone says
/// only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn io_chain(e: &std::io::Error) -> String {
    chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_stays_within_half_of_it() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(8));
        let caps: Vec<u64> = (1..=6)
            .map(|n| backoff_cap(n, b, m).as_millis() as u64)
            .collect();
        assert_eq!(caps, vec![1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff_delay(3, b, m, 0.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(3, b, m, 1.0), Duration::from_secs(4));
        for _ in 0..100 {
            let d = backoff_delay(2, b, m, fastrand::f64());
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_bound_counts_every_attempt_and_wait() {
        let s = FetchSettings {
            timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            ..FetchSettings::default()
        };
        assert_eq!(s.bound(), Duration::from_millis(2000 * 3 + 500 + 1000));
    }
}
