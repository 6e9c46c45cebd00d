//! Transfer benchmark: tap's parallel multipart upload / ranged download against `aws s3 cp`
//! (awscli), boto3's default transfer manager and s3transfer's CRT manager, same files, same
//! local S3 server (s3s-fs on loopback), medians of several runs, in one process.
//! `scripts/bench-transfer.sh` installs the server and the competitors and runs it.
//!
//! Each transfer runs as a child process under `/usr/bin/time`, so wall time, client CPU
//! seconds and peak RSS are measured the same way for every tool. tap runs as this binary
//! re-executed with `child up|down ...`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tap_cli::artifacts::transfer::{self, TransferOptions};

const BUCKET: &str = "tap-bench";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new("bench", "benchsecret", None, None, "static");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// `child up|down FILE KEY ENDPOINT PART_SIZE CONCURRENCY STATE_DIR`: one tap transfer.
fn child(args: &[String]) {
    let [dir, file, key, endpoint, part, conc, state] = args else { panic!("child args: {args:?}") };
    let opts =
        TransferOptions { part_size: part.parse().expect("part"), concurrency: conc.parse().expect("concurrency") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let c = client(endpoint);
    let progress = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        match dir.as_str() {
            "up" => {
                transfer::upload(&c, BUCKET, key, Path::new(file), None, opts, Path::new(state), progress, None)
                    .await
                    .expect("upload");
            }
            _ => transfer::download(&c, BUCKET, key, Path::new(file), None, opts, progress).await.expect("download"),
        }
    });
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

/// Runs `cmd` under /usr/bin/time: wall seconds, user+system seconds, peak RSS.
fn measure(cmd: Command) -> Sample {
    let out_file = std::env::temp_dir().join(format!("tap-bench-time-{}", fastrand::u64(..)));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%e %U %S %M").arg("-o").arg(&out_file).arg(program).args(args);
    for (k, v) in envs {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let start = Instant::now();
    let status = timed.stdout(Stdio::null()).stderr(Stdio::inherit()).status().expect("run");
    let wall = start.elapsed().as_secs_f64();
    assert!(status.success(), "transfer failed: {cmd:?}");
    let text = std::fs::read_to_string(&out_file).expect("time output");
    let _ = std::fs::remove_file(&out_file);
    let f: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    Sample { wall, cpu: f[1] + f[2], rss_mib: f[3] / 1024.0 }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Setup {
    endpoint: String,
    pybench: PathBuf,
    script: PathBuf,
    work: PathBuf,
    opts: TransferOptions,
}

fn command(setup: &Setup, tool: &str, up: bool, file: &Path, key: &str) -> Command {
    let dir = if up { "up" } else { "down" };
    let mut c = match tool {
        "tap" => {
            let mut c = Command::new(std::env::current_exe().expect("exe"));
            c.args(["child", dir, file.to_str().expect("utf-8"), key, &setup.endpoint])
                .arg(setup.opts.part_size.to_string())
                .arg(setup.opts.concurrency.to_string())
                .arg(setup.work.join("state"));
            c
        }
        "awscli" => {
            let mut c = Command::new(setup.pybench.join("bin/aws"));
            let s3 = format!("s3://{BUCKET}/{key}");
            let (from, to) = if up {
                (file.to_str().expect("utf-8"), s3.as_str())
            } else {
                (s3.as_str(), file.to_str().expect("utf-8"))
            };
            c.args(["s3", "cp", "--only-show-errors", "--endpoint-url", &setup.endpoint, from, to]);
            c
        }
        _ => {
            let mut c = Command::new(setup.pybench.join("bin/python"));
            c.arg(&setup.script).args([tool, dir, file.to_str().expect("utf-8"), BUCKET, key, &setup.endpoint]);
            c
        }
    };
    c.env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "benchsecret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(&args[2..]);
    }
    let (Some(s3s), Some(pybench)) = (env("TAP_S3S_FS"), env("TAP_PYBENCH")) else {
        println!("skipped: run scripts/bench-transfer.sh (it installs s3s-fs, awscli, boto3 and awscrt)");
        return;
    };
    let sizes: Vec<u64> = env("TAP_BENCH_SIZES_MIB")
        .unwrap_or_else(|| "256,1024".into())
        .split(',')
        .map(|s| s.parse::<u64>().expect("size") << 20)
        .collect();
    let runs: usize = env("TAP_BENCH_RUNS").and_then(|s| s.parse().ok()).unwrap_or(3);
    let tools: Vec<String> =
        env("TAP_BENCH_TOOLS").unwrap_or_else(|| "tap,awscli,boto3,crt".into()).split(',').map(str::to_owned).collect();
    let opts = TransferOptions {
        part_size: env("TAP_BENCH_PART_MIB").and_then(|s| s.parse().ok()).unwrap_or(16) << 20,
        concurrency: env("TAP_BENCH_CONCURRENCY").and_then(|s| s.parse().ok()).unwrap_or(8),
    };

    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("s3");
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let mut server = Command::new(&s3s)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "bench",
            "--secret-key",
            "benchsecret",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let setup = Setup {
        endpoint: format!("http://127.0.0.1:{port}"),
        pybench: PathBuf::from(pybench),
        script: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench/s3_clients.py")),
        work: work.path().to_owned(),
        opts,
    };
    println!(
        "transfer benchmark: s3s-fs on loopback, {runs} runs per cell (median), tap part size {} MiB x {} in flight",
        opts.part_size >> 20,
        opts.concurrency
    );
    println!(
        "{:<8} {:>6}  {:>10} {:>9} {:>8}  {:>10} {:>9} {:>8}",
        "tool", "MiB", "up MB/s", "up CPU s", "up RSS", "down MB/s", "down CPU", "down RSS"
    );
    for size in sizes {
        let src = work.path().join(format!("src-{size}"));
        {
            let mut rng = fastrand::Rng::with_seed(size);
            let mut f = std::io::BufWriter::new(std::fs::File::create(&src).expect("file"));
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..size >> 20 {
                rng.fill(&mut buf);
                std::io::Write::write_all(&mut f, &buf).expect("write");
            }
        }
        let mut best_other_up: f64 = 0.0;
        let mut best_other_down: f64 = 0.0;
        let mut results = Vec::new();
        for tool in &tools {
            let (mut up, mut down) = (Vec::new(), Vec::new());
            for r in 0..runs {
                let key = format!("{tool}/{size}/{r}");
                up.push(measure(command(&setup, tool, true, &src, &key)));
                let dest = work.path().join(format!("dest-{tool}-{r}"));
                down.push(measure(command(&setup, tool, false, &dest, &key)));
                let same = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0) == size;
                assert!(same, "{tool} downloaded a wrong size");
                let _ = std::fs::remove_file(&dest);
            }
            let mbps = |s: &[Sample]| size as f64 / 1e6 / median(s.iter().map(|x| x.wall).collect());
            let cpu = |s: &[Sample]| median(s.iter().map(|x| x.cpu).collect());
            let rss = |s: &[Sample]| s.iter().map(|x| x.rss_mib).fold(0.0, f64::max);
            let row = (tool.clone(), mbps(&up), cpu(&up), rss(&up), mbps(&down), cpu(&down), rss(&down));
            if tool != "tap" {
                best_other_up = best_other_up.max(row.1);
                best_other_down = best_other_down.max(row.4);
            }
            println!(
                "{:<8} {:>6}  {:>10.0} {:>9.2} {:>7.0}M  {:>10.0} {:>9.2} {:>7.0}M",
                row.0,
                size >> 20,
                row.1,
                row.2,
                row.3,
                row.4,
                row.5,
                row.6
            );
            results.push(row);
        }
        if let Some(t) = results.iter().find(|r| r.0 == "tap") {
            let boto = results.iter().find(|r| r.0 == "boto3");
            println!(
                "  tap vs best other: upload {:.2}x, download {:.2}x throughput{}; tap RSS bound part x concurrency + 50 MiB = {} MiB",
                t.1 / best_other_up.max(1e-9),
                t.4 / best_other_down.max(1e-9),
                boto.map_or(String::new(), |b| format!("; upload CPU {:.2}x boto3's", t.2 / b.2.max(1e-9))),
                (opts.part_size >> 20) * opts.concurrency as u64 + 50
            );
        }
        let _ = std::fs::remove_file(&src);
    }
    let _ = server.kill();
    let _ = server.wait();
}
