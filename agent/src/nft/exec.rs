//! The seam to `nft`: the trait the nft layer runs it through and its
//! errors. The process itself (`NftCommand`) lives in the system layer.

/// Errors of the nft layer; each names the command and carries nft's own words.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `{command}`: {source} (is nftables installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed JSON we cannot read: {source}")]
    Json {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

impl NftError {
    /// A failure of nft itself (rejected batch, kernel error), as opposed to a missing binary
    /// or unreadable output. Rejected batches are not worth retrying unchanged.
    pub fn is_rejected(&self) -> bool {
        matches!(self, NftError::Failed { .. })
    }
}

/// Runs `nft ARGS...`, optionally with a JSON batch on stdin, and returns its stdout.
pub trait NftExec {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError>;
}
