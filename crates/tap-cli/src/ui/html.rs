//! HTML for `tap ui`: escaping, URL encoding and the page frame. Every text that came from a
//! run (names, commands, metric names, tags, log lines, hyperparameters) goes through
//! [`esc`]; every value put into a URL goes through [`enc`]. The pages carry no inline script
//! or style (the Content-Security-Policy forbids both): behaviour is `/static/app.js`,
//! data for it rides in `data-` attributes.

use std::fmt::Write as _;

/// Text as HTML text or as a quoted attribute value: `&`, `<`, `>`, `"` and `'` as entities,
/// control characters (but tab and newline) as U+FFFD, so a log line cannot end the element
/// it is in or write into the terminal-looking `<pre>`.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A URL query value or path segment: everything but unreserved characters percent-encoded.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The navigation's sections; the current one is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Compare,
    Jobs,
    Fleet,
}

/// A page: the frame around `body`, with the XSRF token the page's one write (Cancel) sends.
pub fn page(title: &str, section: Section, xsrf: &str, body: &str) -> String {
    let nav = [
        (Section::Runs, "/", "Runs"),
        (Section::Compare, "/compare", "Compare"),
        (Section::Jobs, "/jobs", "Jobs"),
        (Section::Fleet, "/fleet", "Fleet"),
    ]
    .iter()
    .map(|(s, href, label)| {
        let current = if *s == section { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    })
    .collect::<Vec<_>>()
    .join(" ");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"tap-xsrf\" content=\"{xsrf}\">\
         <title>{title} · tap</title>\
         <link rel=\"stylesheet\" href=\"/static/uPlot.min.css\"><link rel=\"stylesheet\" href=\"/static/style.css\">\
         <script src=\"/static/uPlot.iife.min.js\" defer></script><script src=\"/static/app.js\" defer></script>\
         </head><body><header><a class=\"brand\" href=\"/\">tap</a> <nav>{nav}</nav></header>\n<main>\n{body}\n</main></body></html>\n",
        xsrf = esc(xsrf),
        title = esc(title),
    )
}

/// A number as a table shows it: 4 significant digits, no trailing noise.
pub fn number(v: f64) -> String {
    crate::render::number(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_stays_text() {
        for hostile in ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "</textarea><b>", "'single'"] {
            let e = esc(hostile);
            assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''), "{e}");
        }
        assert_eq!(esc("a&b"), "a&amp;b");
        assert_eq!(esc("ünï ✓\tx\n"), "ünï ✓\tx\n", "unicode and layout stay");
        assert_eq!(esc("bell\u{7}\u{1b}[31m"), "bell\u{fffd}\u{fffd}[31m", "no terminal escapes");
    }

    #[test]
    fn url_values_are_percent_encoded() {
        assert_eq!(enc("train/loss@1 x&y=z"), "train%2Floss%401%20x%26y%3Dz");
        assert_eq!(enc("ok-1_2.3~"), "ok-1_2.3~");
        assert_eq!(enc("ü"), "%C3%BC");
    }
}
