//! Text as messages quote it.

use std::error::Error;
use std::fmt;

/// An error and every cause under it on one line, outermost first (`S3 PutObject k: dispatch
/// failure: io error: Connection refused`): how tap shows an error it logs or records rather
/// than returns. (Errors that are returned reach the top level, which prints the same chain.)
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        // Bounded: a cycle of sources would be a bug elsewhere, not a reason to hang.
        for _ in 0..MAX_CAUSES {
            let Some(cause) = next else { break };
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

/// The most causes [`Chain`] prints (the SDK's deepest chains are about six).
const MAX_CAUSES: usize = 16;

/// [`Chain`] of `e`.
pub fn chain<'a>(e: &'a (dyn Error + 'a)) -> Chain<'a> {
    Chain(e)
}

/// At most `max_chars` characters of `s`, with "..." when cut: a message names a bad value
/// without echoing a megabyte of it.
pub fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// A TOML parse error as one line: `line 3, column 1: unknown field `stak`, expected `stack``
/// (toml's own Display draws the line with a caret over several lines; tap's rule is one line
/// naming the file, the key and the problem — the caller adds the file).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(span) = e.span() else { return message };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    // The key, from the line (`key = value`) and the table above it: toml's message says
    // only what is wrong with the value ("invalid type: string \"60\", expected u32").
    let key = text.lines().nth(line - 1).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim().trim_matches('"'));
    let prior = before.rsplit_once('\n').map_or("", |(p, _)| p);
    let table = prior
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match key.filter(|k| !k.is_empty() && !message.contains(*k)) {
        Some(k) => {
            let k = table.map_or_else(|| k.to_owned(), |t| format!("{t}.{k}"));
            format!("line {line}, column {column}: {k}: {message}")
        }
        None => format!("line {line}, column {column}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chain_prints_every_cause_on_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("S3 PutObject k")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("Connection refused"));
        assert_eq!(super::chain(&e).to_string(), "S3 PutObject k: Connection refused");
        assert_eq!(super::chain(&std::io::Error::other("alone")).to_string(), "alone");
    }

    #[test]
    fn toml_errors_are_one_line_with_their_place() {
        let text = "[metrics]\nnamespace = \"x\"\n[stak]\n";
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct C {
            metrics: Option<toml::Value>,
            stack: Option<toml::Value>,
        }
        let e = toml::from_str::<C>(text).expect_err("bad");
        assert_eq!(
            super::toml_error(text, &e),
            "line 3, column 2: unknown field `stak`, expected `metrics` or `stack`"
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct M {
            metrics: Metrics,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Metrics {
            every: u32,
        }
        let text = "# tap\n[metrics]\nevery = \"60\"\n";
        let e = toml::from_str::<M>(text).expect_err("bad");
        assert_eq!(
            super::toml_error(text, &e),
            "line 3, column 9: metrics.every: invalid type: string \"60\", expected u32",
            "the key is named"
        );
        let e = toml::from_str::<C>("metrics = [").expect_err("bad");
        let one = super::toml_error("metrics = [", &e);
        assert!(one.starts_with("line 1, column ") && !one.contains('\n'), "{one}");
    }

    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(super::clip("héllo", 2), "hé...");
        assert_eq!(super::clip("hi", 2), "hi");
    }
}
