//! Running `nft`: as a child process, JSON on stdin, its error text tidied.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::process::{Command, Stdio};

use nftables::batch::Batch;

use crate::error::NftError;

/// How to run `nft`: the program and any arguments before nft's own
/// (`ip netns exec NS nft` runs it inside a network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftCommand {
    program: OsString,
    args: Vec<OsString>,
}

impl Default for NftCommand {
    fn default() -> Self {
        Self { program: "nft".into(), args: Vec::new() }
    }
}

impl NftCommand {
    /// `nft` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// `program args… <nft arguments>`, for a wrapper such as
    /// `ip netns exec NS nft`.
    pub fn wrapped<I, S>(program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self { program: program.into(), args: args.into_iter().map(Into::into).collect() }
    }

    fn name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Runs `nft <args>` with `input` on stdin and returns stdout.
    pub(crate) fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
        let spawn = |source: io::Error| NftError::Spawn { program: self.name(), source };
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    NftError::Missing { program: self.name() }
                } else {
                    spawn(source)
                }
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).map_err(spawn)?;
        }
        let output = child.wait_with_output().map_err(spawn)?;
        if !output.status.success() {
            return Err(NftError::Refused { message: tidy(&String::from_utf8_lossy(&output.stderr)) });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Applies `batch` as one transaction.
    pub(crate) fn apply(&self, batch: Batch<'_>) -> Result<(), NftError> {
        let json = serde_json::to_string(&batch.to_nftables()).map_err(NftError::Listing)?;
        self.run(&["-j", "-f", "-"], Some(&json)).map(drop)
    }
}

/// nftables' error text without the position prefix JSON input gets, on
/// one line, at most 500 characters.
fn tidy(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("internal:0:0-0: ").unwrap_or(l))
        .collect();
    let text = if lines.is_empty() { "nft failed without a message".to_owned() } else { lines.join("; ") };
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_the_position_prefix() {
        let stderr = "internal:0:0-0: Error: Could not process rule: File exists\n\n\
                      internal:0:0-0: Error: Could not process rule: Invalid argument\n";
        assert_eq!(
            tidy(stderr),
            "Error: Could not process rule: File exists; Error: Could not process rule: Invalid argument"
        );
        assert_eq!(tidy(""), "nft failed without a message");
    }

    #[test]
    fn a_missing_nft_names_the_package() {
        let command = NftCommand::wrapped("/nonexistent/pakkt-nft", Vec::<String>::new());
        let err = command.run(&["--version"], None).expect_err("missing");
        assert!(matches!(err, NftError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("apt-get install nftables"), "{err}");
    }
}
