//! Text as messages quote it.

/// At most `max_chars` characters of `s`, with "..." when cut: a message names a bad value
/// without echoing a megabyte of it.
pub fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(super::clip("héllo", 2), "hé...");
        assert_eq!(super::clip("hi", 2), "hi");
    }
}
