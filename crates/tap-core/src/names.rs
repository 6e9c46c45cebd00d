//! The one rule for the names of metrics, tags and hyperparameters.
//!
//! The rule takes what the ecosystem writes — `train/loss` (W&B, TensorBoard), `eval/acc@1`,
//! `lr-AdamW/pg1` (Lightning's LearningRateMonitor), `val_loss/dataloader_idx_0` — and refuses
//! what tap's command line or its stores could not keep apart:
//! - ASCII letters, digits and `_ . - / @ : + % ( ) [ ]`; no spaces, and none of
//!   `= , < > ! ~ " ' \ $ * ? & | ; { } #`: `=` splits `--param`/`--tag` values, `,` splits
//!   `--columns`, `< > ! =` are `--where`'s operators, and the rest is shell syntax a user
//!   would have to quote; no leading `-` (a flag, or `--sort`'s "descending");
//! - `/` separates segments; no segment is empty, `.` or `..` (`train//loss`, `../x`);
//! - 1 to [`MAX_NAME_LEN`] bytes.
//!
//! The rule's test vectors live in `spec/names.json` at the repository root; the Rust tests
//! here and tapml's pytest suite both read them, so the two sides cannot drift apart.
//! Experiment, artifact and group ids keep the stricter [`crate::runs::valid_id`]: they become
//! S3 keys, DynamoDB sort-key prefixes and file names.

use std::fmt;

/// The longest name, in bytes (W&B and MLflow both allow 250; TensorBoard tags are longer
/// in practice only when generated).
pub const MAX_NAME_LEN: usize = 256;

/// What the rule asks for, for messages and `--help`.
pub const NAME_RULE: &str = "1-256 of A-Z a-z 0-9 _ . - / @ : + % ( ) [ ], not starting with '-', '/' only between segments that are not '.' or '..'";

/// Characters besides ASCII letters and digits that a name may hold.
pub const NAME_PUNCTUATION: &str = "_.-/@:+%()[]";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong {
        bytes: usize,
    },
    /// A character outside the rule, and where (character index).
    Character {
        c: char,
        at: usize,
    },
    /// `-loss` reads as a flag on the command line and as "descending" to `--sort`.
    LeadingDash,
    /// A segment between slashes that is empty, `.` or `..`.
    Segment {
        segment: String,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "it is empty"),
            NameError::TooLong { bytes } => write!(f, "it is {bytes} bytes long, more than {MAX_NAME_LEN}"),
            NameError::Character { c, at } if c.is_whitespace() => {
                write!(f, "it holds white space ({:?}) at character {}", c, at + 1)
            }
            NameError::Character { c, at } => write!(f, "it holds {:?} at character {}", c, at + 1),
            NameError::LeadingDash => write!(f, "it starts with '-'"),
            NameError::Segment { segment } if segment.is_empty() => {
                write!(f, "it has an empty segment ('/' at its start or end, or '//')")
            }
            NameError::Segment { segment } => write!(f, "it has a segment {segment:?}"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks `name` against the rule.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some((at, c)) =
        name.chars().enumerate().find(|(_, c)| !(c.is_ascii_alphanumeric() || NAME_PUNCTUATION.contains(*c)))
    {
        return Err(NameError::Character { c, at });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { bytes: name.len() });
    }
    if name.starts_with('-') {
        return Err(NameError::LeadingDash);
    }
    if let Some(s) = name.split('/').find(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(NameError::Segment { segment: s.to_owned() });
    }
    Ok(())
}

/// `Ok(name)` or a one-line message: `metric name "a b" is refused: it holds white space ...`.
/// The name is clipped in the message (a megabyte name is not echoed back).
pub fn checked<'a>(what: &str, name: &'a str) -> Result<&'a str, String> {
    check_name(name).map(|()| name).map_err(|e| refusal(what, name, &e))
}

/// The message for a refused name.
pub fn refusal(what: &str, name: &str, e: &NameError) -> String {
    format!("{what} {:?} is refused: {e} (names are {NAME_RULE})", crate::text::clip(name, 80))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spec/names.json`: `{"accepted": [names], "refused": [{"name", "why"}]}`, where `why`
    /// is a word the refusal's message holds.
    const VECTORS: &str = include_str!("../../../spec/names.json");

    #[derive(serde::Deserialize)]
    struct Vectors {
        accepted: Vec<String>,
        refused: Vec<Refused>,
    }

    #[derive(serde::Deserialize)]
    struct Refused {
        name: String,
        why: String,
    }

    #[test]
    fn the_shared_test_vectors_hold() {
        let v: Vectors = serde_json::from_str(VECTORS).expect("spec/names.json");
        assert!(v.accepted.len() >= 10 && v.refused.len() >= 10);
        for name in &v.accepted {
            assert_eq!(check_name(name), Ok(()), "{name:?}");
        }
        for r in &v.refused {
            let e = check_name(&r.name).expect_err(&r.name);
            assert!(e.to_string().contains(&r.why), "{:?}: {e} does not say {:?}", r.name, r.why);
        }
    }

    #[test]
    fn names_the_ecosystem_writes_are_accepted() {
        for n in ["train/loss", "eval/acc@1", "lr-AdamW", "val_loss/dataloader_idx_0", "lr-AdamW/pg1"] {
            assert_eq!(check_name(n), Ok(()), "{n}");
        }
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
        assert!(matches!(check_name(&"a".repeat(MAX_NAME_LEN + 1)), Err(NameError::TooLong { .. })));
    }

    #[test]
    fn a_megabyte_name_is_not_echoed_back() {
        let long = "x".repeat(1 << 20);
        let msg = checked("metric name", &long).expect_err("too long");
        assert!(msg.len() < 400, "{}", msg.len());
    }
}
