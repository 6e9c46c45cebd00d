//! What every request to `tap ui` passes before a page sees it, and the headers every
//! response carries. Local UIs are attacked through the browser, so this follows the ones that
//! were: the Host header must name this machine (MLflow ≥ 3.5, against DNS rebinding); off
//! loopback, a token printed once in the URL and then kept in a cookie (Jupyter); a write
//! needs POST with the page's XSRF token in a header, which another site's form cannot set;
//! a Content-Security-Policy that allows no inline script, so an escaped name that slipped
//! through still could not run.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Ui;
use crate::store::{LogStore, RunStore};

/// The cookie the token lives in after the first request that carried it.
pub const TOKEN_COOKIE: &str = "tap_ui_token";
/// The header a write carries the page's XSRF token in (`<meta name="tap-xsrf">`).
pub const XSRF_HEADER: &str = "x-xsrf-token";

/// Scripts and styles from this server only; no inline script, no plugin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// 24 random bytes from the kernel, as hex.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| anyhow::anyhow!("reading /dev/urandom for the token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The middleware: Host, token, XSRF; then the security headers on whatever is answered.
pub async fn check<R, L>(State(ui): State<Arc<Ui<R, L>>>, request: Request, next: Next) -> Response
where
    R: RunStore + 'static,
    L: LogStore + 'static,
{
    let mut response = match refused(&ui, &request) {
        Some(r) => r,
        None => match token_in_url(&ui, &request) {
            // The token arrived in the URL: it goes into a cookie, and the URL loses it.
            Some(clean) => redirect_with_cookie(&clean, ui.settings.token.as_deref().unwrap_or_default()),
            None => next.run(request).await,
        },
    };
    secure(response.headers_mut());
    response
}

/// Why a request is refused, as the response (None: it may pass).
fn refused<R, L>(ui: &Ui<R, L>, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !host_allowed(host) {
        return Some(text(
            StatusCode::FORBIDDEN,
            format!(
                "tap ui: the Host header {host:?} does not name this machine (a DNS rebinding guard); use 127.0.0.1 or localhost"
            ),
        ));
    }
    if let Some(token) = ui.settings.token.as_deref() {
        let presented = query_token(request.uri().query())
            .or_else(|| cookie(headers, TOKEN_COOKIE))
            .or_else(|| headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()?.strip_prefix("token ")));
        if !presented.is_some_and(|p| same(p, token)) {
            return Some(text(
                StatusCode::UNAUTHORIZED,
                "tap ui: this server needs its token: open the URL `tap ui` printed (it ends in ?token=...)".into(),
            ));
        }
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let sent = headers.get(XSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|s| same(s, &ui.xsrf)) {
            return Some(text(
                StatusCode::FORBIDDEN,
                "tap ui: a write needs the page's XSRF token (reload the page and try again)".into(),
            ));
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if let Some(o) = origin.filter(|o| o.split_once("://").map(|(_, h)| h) != Some(host)) {
            return Some(text(
                StatusCode::FORBIDDEN,
                format!("tap ui: a write from another origin ({o:?}) is refused"),
            ));
        }
    }
    None
}

/// Whether a Host header names this machine: `localhost`, an IP address (a page of another
/// site cannot make a browser send one it was not loaded from), or this machine's own name.
pub fn host_allowed(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host }),
    };
    if name.is_empty() {
        return false;
    }
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.parse::<std::net::IpAddr>().is_ok()
        || nix::unistd::gethostname().is_ok_and(|h| h.to_string_lossy().eq_ignore_ascii_case(&name))
}

/// A GET whose URL carries the right token: the same URL without it.
fn token_in_url<R, L>(ui: &Ui<R, L>, request: &Request) -> Option<String> {
    let token = ui.settings.token.as_deref()?;
    if request.method() != Method::GET || !query_token(request.uri().query()).is_some_and(|t| same(t, token)) {
        return None;
    }
    let rest: Vec<(String, String)> = form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut url = request.uri().path().to_owned();
    if !rest.is_empty() {
        url.push('?');
        url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(rest).finish());
    }
    Some(url)
}

fn redirect_with_cookie(location: &str, token: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")) {
        h.insert(header::SET_COOKIE, v);
    }
    r
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

pub fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The files the pages load, compiled in: uPlot 1.6.32 (MIT, `assets/LICENSE-uPlot`), the
/// pages' script and style.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("assets/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("assets/style.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("assets/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("assets/uPlot.min.css")),
    ("LICENSE-uPlot", "text/plain; charset=utf-8", include_bytes!("assets/LICENSE-uPlot")),
];

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => {
            ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "max-age=300")], Body::from(*bytes))
                .into_response()
        }
        None => not_found().await,
    }
}

pub async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "tap ui: no such page".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_name_this_machine_pass_and_others_do_not() {
        for ok in ["127.0.0.1:8450", "localhost:9000", "LOCALHOST", "[::1]:8450", "10.0.3.7:8450", "::1"] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in ["attacker.example:8450", "", "evil.localhost.example", "[]:80", "127.0.0.1.nip.io"] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token().expect("token"), random_token().expect("token"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, &a[..47]));
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; tap_ui_token=abc; b=2"));
        assert_eq!(cookie(&h, TOKEN_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "tap_ui"), None);
    }
}
