//! `tap ui` over HTTP (issue 27): every page and API route on a store that `tap run` filled
//! (the local one here, the stack's on moto in `stack`), hostile text shown as text, the
//! secrets masked, the API's shapes those of `--output json`, and the guard: the Host check,
//! the token off the default address, the XSRF token on writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A training that logs two metrics (one named like the ecosystem names them), prints a
/// hostile line and reads its hyperparameters.
const TRAINING: &str = r#"
import os, sys, tapml
hp = tapml.hparams()
for s in range(300):
    tapml.log(s, **{"train/loss": 1.0 / (s + 1) + (5.0 if s == 150 else 0.0), "acc": s / 300})
    if s in (99, 199):
        with tapml.checkpoint(s) as d:
            with open(os.path.join(d, "weights.bin"), "w") as f:
                f.write("w" * s)
print("</pre><script>alert('log')</script>")
print("warn: ünïcödé", file=sys.stderr)
"#;

/// A hostile tag value and note: every kind of breakout.
pub const HOSTILE: &str = "<script>alert(1)</script>\"'></textarea><img src=x onerror=alert(2)>";

/// `tap ui` running; stopped on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT/` (with `?token=` where one is needed).
    pub url: String,
    pub addr: String,
}

impl Server {
    pub fn start(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tap ui starts");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut first).expect("tap ui says where");
        let url = first.trim().strip_prefix("tap ui: serving ").unwrap_or_else(|| panic!("{first:?}")).to_owned();
        let addr = url.trim_start_matches("http://").split('/').next().expect("host:port").to_owned();
        Server { child, url, addr }
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTP/1.1 request on a fresh loopback connection (`Connection: close`, read to EOF).
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Response { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..line_end]).trim(), 16).expect("hex");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        b = &b[line_end + 2 + size + 2..];
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fills the store through `tap` (`tap(args)` builds the command), serves it, and checks
/// every page and API route.
pub fn serves_every_page(tap: &dyn Fn(&[&str]) -> Command) {
    let run = |args: &[&str]| ok(&tap(args).output().expect("tap"));
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&run(&[args, &["--output", "json"]].concat())).expect("JSON")
    };
    run(&["params", "set", "lr", "0.1"]);
    run(&["params", "set", "api_token", "s3cr3t-value"]);
    for (name, lr) in [("fast", "0.3"), ("slow", "0.01")] {
        run(&["run", "-e", "uitest", "--name", name, "--param", &format!("lr={lr}"), "--", "python3", "-c", TRAINING]);
    }
    run(&["runs", "tag", "fast", &format!("evil={}", &HOSTILE[..HOSTILE.len().min(200)])]);
    run(&["runs", "note", "fast", HOSTILE]);
    // Very long text: a note of 4,000 bytes and a tag value of 256, whole and escaped.
    let long_note: String = HOSTILE.chars().cycle().take(3_900).collect();
    run(&["runs", "note", "slow", &long_note]);
    let long_tag = "ü".repeat(128);
    run(&["runs", "tag", "slow", &format!("long={long_tag}")]);
    let fast = json(&["runs", "show", "fast"]);
    let id = fast["run"]["run_id"].as_str().expect("id").to_owned();
    let slow_id = json(&["runs", "show", "slow"])["run"]["run_id"].as_str().expect("id").to_owned();

    let server = Server::start(tap(&["ui", "--port", "0"]));
    assert!(server.url.starts_with("http://127.0.0.1:") && !server.url.contains("token"), "{}", server.url);

    // The runs table: both runs, the chosen columns, sorted both ways, filtered.
    let page = server.get("/");
    assert_eq!(page.status, 200, "{}", page.text());
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let body = page.text();
    assert!(body.contains(&format!("data-run=\"uitest/{id}\"")) && body.contains(&slow_id), "{body}");
    assert_no_raw_hostile(&body);
    let sorted = |sort: &str| -> Vec<String> {
        let b = server.get(&format!("/?sort={sort}&col=param.lr&col=metric.acc")).text();
        assert!(b.contains("data-field=\"param.lr\"") && b.contains("data-field=\"metric.acc\""), "{b}");
        b.match_indices("<tr data-run=\"uitest/").map(|(i, _)| b[i + 21..i + 21 + 10].to_owned()).collect()
    };
    assert_eq!(sorted("param.lr"), sorted("-param.lr").into_iter().rev().collect::<Vec<_>>());
    let filtered = server.get("/?where=param.lr%3E0.1").text();
    assert!(filtered.contains(&id) && !filtered.contains(&slow_id), "the filter keeps fast only");
    assert!(server.get("/?q=slo").text().contains(&slow_id));
    assert!(!server.get("/?status=failed").text().contains(&slow_id));
    let bad = server.get("/?sort=-no%20such");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("sort:"), "one line naming the parameter");

    // A run: charts for each metric, hyperparameters with the secret masked, the log tail.
    let run_page = server.get(&format!("/runs/uitest/{id}"));
    assert_eq!(run_page.status, 200);
    let body = run_page.text();
    assert!(body.contains("data-src=\"/api/runs/uitest/") && body.contains("series?metric=train%2Floss"), "{body}");
    assert!(!body.contains("s3cr3t-value") && body.contains("••••••"), "the secret is masked");
    assert!(body.contains("&lt;/pre&gt;&lt;script&gt;"), "the log line is text");
    assert!(body.contains("ünïcödé"), "unicode stays");
    assert!(body.contains("id=\"checkpoints\""), "the checkpoints' section");
    assert_no_raw_hostile(&body);
    assert_eq!(server.get("/runs/uitest/fast").status, 200, "a run by name");
    let slow_page = server.get("/runs/uitest/slow").text();
    let escaped_note = long_note
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    assert!(slow_page.contains(&escaped_note) && slow_page.contains(&long_tag), "very long text, whole");
    assert_no_raw_hostile(&slow_page);
    assert_eq!(server.get("/runs/uitest/nope").status, 404);
    let png = server.get(&format!("/runs/uitest/{id}/goodput.png"));
    assert_eq!((png.status, png.header("content-type").as_deref()), (200, Some("image/png")));
    assert!(png.body.starts_with(b"\x89PNG"));

    // Compare: both runs, the diff shows only lr, the parallel coordinates a line per run.
    let cmp = server.get(&format!("/compare?run=uitest/{id}&run=uitest/{slow_id}&target=acc")).text();
    assert!(cmp.contains("id=\"diff\"") && cmp.contains("<td>lr</td>") && !cmp.contains("<td>epochs</td>"), "{cmp}");
    assert_eq!(cmp.matches("class=\"run-line\"").count(), 2, "{cmp}");
    assert!(cmp.contains("/api/compare?run=uitest%2F"), "{cmp}");
    assert_no_raw_hostile(&cmp);

    // The API: the CLI's shapes.
    let api_runs = server.get("/api/runs");
    assert_eq!(api_runs.header("x-total-count").as_deref(), Some("2"));
    let cli_list = json(&["runs", "list"]);
    assert_eq!(api_runs.json(), cli_list, "/api/runs is `tap runs list --output json`");
    let shown = server.get(&format!("/api/runs/uitest/{id}")).json();
    for field in ["run", "attempts", "metrics", "final_checkpoints"] {
        assert_eq!(shown[field], fast[field], "{field} as `tap runs show --output json` has it");
    }
    assert!(shown["goodput"]["goodput_pct"].is_number());
    let s = server.get(&format!("/api/runs/uitest/{id}/series?metric=train%2Floss&points=10")).json();
    assert_eq!((s["points"].as_u64(), s["downsampled"].as_bool()), (Some(300), Some(true)));
    let values: Vec<f64> = s["values"].as_array().expect("values").iter().filter_map(|v| v.as_f64()).collect();
    assert!(values.len() <= 21 && values.iter().any(|v| *v > 5.0), "the spike survives: {values:?}");
    assert_eq!(s["steps"].as_array().and_then(|a| a.last()).and_then(|v| v.as_u64()), Some(299), "the last step stays");
    let zoom = server.get(&format!("/api/runs/uitest/{id}/series?metric=train%2Floss&from=100&to=109")).json();
    assert_eq!(zoom["steps"], serde_json::json!((100..=109).collect::<Vec<u64>>()), "zoomed: full resolution");
    let c = server.get(&format!("/api/compare?run=uitest/{id}&run=uitest/{slow_id}&metric=acc&points=20")).json();
    let steps = c["steps"].as_array().expect("steps").len();
    assert!(c["runs"].as_array().expect("runs").iter().all(|r| r["values"].as_array().map(Vec::len) == Some(steps)));
    let logs = server.get(&format!("/api/runs/uitest/{id}/logs?tail=1")).json();
    let all_lines = json(&["logs", &id]);
    let last = all_lines.as_array().and_then(|a| a.last()).cloned().expect("a line");
    assert_eq!(logs, serde_json::json!([last]), "`tap logs --output json`, its tail");
    let checkpoints = server.get(&format!("/api/runs/uitest/{id}/checkpoints")).json();
    assert_eq!(checkpoints, json(&["checkpoints", "list", &id]), "`tap checkpoints list --output json`");
    assert_eq!(checkpoints.as_array().map(Vec::len), Some(2), "{checkpoints}");
    let g = server.get(&format!("/api/runs/uitest/{id}/goodput")).json();
    assert_eq!(g["run_id"], id.as_str());
    assert_eq!(g["steps_kept"], json(&["goodput", &id])["steps_kept"]);
    for (path, status) in [
        ("/api/runs/uitest/nope/series?metric=acc", 404),
        (&format!("/api/runs/uitest/{id}/series") as &str, 400),
        ("/api/compare?metric=acc", 400),
        ("/no/such/page", 404),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    assert!(server.get("/api/runs/uitest/nope/series?metric=acc").json()["error"].as_str().is_some());

    // Jobs and the fleet live on a stack: the pages say so (the pools' advice shows anyway).
    if run(&["config", "show"]).contains("backend:      local store") {
        let jobs = server.get("/jobs");
        assert!(jobs.status == 200 && jobs.text().contains("id=\"no-stack\""), "{}", jobs.text());
        let fleet = server.get("/fleet").text();
        assert!(fleet.contains("id=\"no-stack\"") && fleet.contains("id=\"pools\""), "{fleet}");
        assert_eq!(server.get("/api/jobs").status, 404);
    }

    // The files the pages load, compiled in.
    for (file, kind) in [("app.js", "javascript"), ("uPlot.iife.min.js", "javascript"), ("uPlot.min.css", "css")] {
        let r = server.get(&format!("/static/{file}"));
        assert!(r.status == 200 && r.header("content-type").is_some_and(|c| c.contains(kind)), "{file}");
    }
}

/// No hostile text came through as markup.
fn assert_no_raw_hostile(body: &str) {
    for raw in ["<script>alert", "<img src=x", "</textarea><", "'></"] {
        assert!(!body.contains(raw), "{raw} came through raw");
    }
}

/// The guard: a request naming another host, a write without the XSRF token, and (off the
/// default address) a request without the token are refused; the token in the URL becomes a
/// cookie.
pub fn guards(tap: &dyn Fn(&[&str]) -> Command) {
    let server = Server::start(tap(&["ui", "--port", "0"]));
    let rebound = request(&server.addr, "GET", "/", &[("Host", "attacker.example:8450")]);
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert!(rebound.text().contains("DNS rebinding"));
    assert_eq!(request(&server.addr, "GET", "/", &[("Host", "localhost:9000")]).status, 200, "SSM port forwarding");
    let write = request(&server.addr, "POST", "/api/runs", &[]);
    assert_eq!(write.status, 403, "{}", write.text());
    assert!(write.text().contains("XSRF"));
    drop(server);

    // 127.0.0.2 is loopback, but not the default: the token is needed.
    let server = Server::start(tap(&["ui", "--host", "127.0.0.2", "--port", "0"]));
    let token = server.url.split("?token=").nth(1).expect("a token in the URL").to_owned();
    assert_eq!(token.len(), 48);
    let refused = server.get("/");
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(refused.text().contains("token"));
    assert_eq!(server.get("/?token=wrong").status, 401);
    let first = server.get(&format!("/?token={token}&q=x"));
    assert_eq!(first.status, 303);
    assert_eq!(first.header("location").as_deref(), Some("/?q=x"), "the token leaves the URL");
    let cookie = first.header("set-cookie").expect("a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().expect("name=value").to_owned();
    assert_eq!(request(&server.addr, "GET", "/", &[("Cookie", &cookie)]).status, 200);
    let auth = format!("token {token}");
    assert_eq!(request(&server.addr, "GET", "/api/runs", &[("Authorization", &auth)]).status, 200);
    drop(server);

    // A port taken: one line saying so.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = holder.local_addr().expect("addr").port().to_string();
    let out = tap(&["ui", "--port", &port]).output().expect("tap ui");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1 && err.contains("--port"), "{err}");
}

fn local(home: &std::path::Path) -> impl Fn(&[&str]) -> Command + '_ {
    move |args| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tap"));
        c.args(args).env("TAP_HOME", home).env_remove("TAP_OUTPUT").env_remove("TAP_EXPERIMENT");
        c
    }
}

#[test]
fn ui_serves_every_page_of_the_local_store() {
    let home = tempfile::tempdir().expect("tempdir");
    serves_every_page(&local(home.path()));
}

#[test]
fn ui_refuses_other_hosts_writes_without_xsrf_and_requests_without_the_token() {
    let home = tempfile::tempdir().expect("tempdir");
    guards(&local(home.path()));
}
