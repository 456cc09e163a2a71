//! `nft` as a process: the only place the nft layer's commands are spawned.

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::nft::{NftError, NftExec};

/// `nft` as a process: a program plus leading arguments, so tests can run
/// `ip netns exec NS nft ...`; the agent already runs inside its namespace and uses plain `nft`.
#[derive(Debug, Clone)]
pub struct NftCommand {
    program: OsString,
    leading: Vec<OsString>,
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand {
            program: "nft".into(),
            leading: Vec::new(),
        }
    }
}

impl NftCommand {
    /// Plain `nft` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any program plus leading arguments that ends up running nft.
    pub fn with_prefix(program: impl Into<OsString>, leading: Vec<OsString>) -> Self {
        NftCommand {
            program: program.into(),
            leading,
        }
    }

    /// `ip netns exec NAME nft ...`
    pub fn in_netns(name: &str) -> Self {
        Self::with_prefix(
            "ip",
            vec!["netns".into(), "exec".into(), name.into(), "nft".into()],
        )
    }

    fn describe(&self, args: &[&str]) -> String {
        let mut parts: Vec<String> = vec![self.program.to_string_lossy().into_owned()];
        parts.extend(
            self.leading
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        parts.extend(args.iter().map(|a| a.to_string()));
        parts.join(" ")
    }
}

impl NftExec for NftCommand {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let command = self.describe(args);
        // LC_ALL=C: observe() recognises "No such file or directory" in nft's stderr.
        let mut child = Command::new(&self.program)
            .args(&self.leading)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NftError::Spawn {
                command: command.clone(),
                source,
            })?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            pipe.write_all(input.as_bytes())
                .map_err(|source| NftError::Spawn {
                    command: command.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| NftError::Spawn {
            command: command.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(NftError::Failed {
                command,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
