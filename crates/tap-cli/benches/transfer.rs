//! Transfer benchmark: tap's parallel multipart upload / ranged download against `aws s3 cp`
//! (awscli), boto3's default transfer manager and s3transfer's CRT manager, same files, same
//! local S3 server (s3s-fs on loopback), medians of several runs, in one process.
//! `scripts/bench-transfer.sh` installs the server and the competitors and runs it.
//!
//! Each transfer runs as a child process under `/usr/bin/time`, so wall time, client CPU
//! seconds and peak RSS are measured the same way for every tool. tap runs as this binary
//! re-executed with `child up|down|push|pull ...`. Every download is compared byte for byte
//! with its source (outside the timing), and the server's copy is deleted after each run so
//! big rows fit on disk.
//!
//! Rows: single files of TAP_BENCH_SIZES_MIB, and a set of many small files
//! (TAP_BENCH_FILES=COUNTxKIB, default 2000x32; "none" skips it), pushed and pulled as a tap
//! artifact (SHA-256 of every file, manifest, LATEST pointer) vs `aws s3 cp --recursive` and the
//! boto3 / CRT transfer managers with every file submitted at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tap_cli::artifacts::checkpoint::{self, Space};
use tap_cli::artifacts::s3::S3Store;
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

/// `child up|down|push|pull PATH KEY ENDPOINT PART_SIZE CONCURRENCY STATE_DIR`: one tap
/// transfer (push/pull: PATH is a directory, KEY the artifact name).
fn child(args: &[String]) {
    let [dir, file, key, endpoint, part, conc, state] = args else { panic!("child args: {args:?}") };
    let opts =
        TransferOptions { part_size: part.parse().expect("part"), concurrency: conc.parse().expect("concurrency") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let c = client(endpoint);
    let progress = Arc::new(AtomicU64::new(0));
    let (path, state) = (Path::new(file), Path::new(state));
    let store = || S3Store::new(c.clone(), BUCKET, "").with_transfer(opts.part_size, opts, state);
    rt.block_on(async {
        match dir.as_str() {
            "up" => {
                transfer::upload(&c, transfer::S3Object { bucket: BUCKET, key }, path, None, opts, state, progress)
                    .await
                    .expect("upload");
            }
            "down" => transfer::download(&c, transfer::S3Object { bucket: BUCKET, key }, path, None, opts, progress)
                .await
                .expect("download"),
            "push" => {
                checkpoint::save(&store(), &checkpoint::CheckpointTarget::artifact(key, "v1"), path)
                    .await
                    .expect("push");
            }
            _ => {
                let s = store();
                let m = checkpoint::latest_in(&s, Space::Artifacts, key).await.expect("latest").expect("pushed");
                checkpoint::restore_in(&s, Space::Artifacts, &m, path).await.expect("pull");
            }
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

/// What one benchmark row moves.
#[derive(Clone, Copy)]
enum Case {
    File { bytes: u64 },
    Files { count: u64, kib: u64 },
}

impl Case {
    fn bytes(self) -> u64 {
        match self {
            Case::File { bytes } => bytes,
            Case::Files { count, kib } => count * kib * 1024,
        }
    }

    fn label(self) -> String {
        match self {
            Case::File { bytes } => format!("{} MiB", bytes >> 20),
            Case::Files { count, kib } => format!("{count}x{kib}K"),
        }
    }

    /// Writes the source (seeded by `seed`: each run moves new content, so tap's
    /// content-addressed store never skips a file it already has).
    fn create(self, path: &Path, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let write = |p: &Path, n: u64, rng: &mut fastrand::Rng| {
            let mut f = std::io::BufWriter::new(std::fs::File::create(p).expect("file"));
            let mut buf = vec![0u8; 1 << 20];
            let mut left = n;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                rng.fill(&mut buf[..k]);
                std::io::Write::write_all(&mut f, &buf[..k]).expect("write");
                left -= k as u64;
            }
        };
        match self {
            Case::File { bytes } => write(path, bytes, &mut rng),
            Case::Files { count, kib } => {
                for i in 0..count {
                    let d = path.join(format!("shard-{:02}", i % 16));
                    std::fs::create_dir_all(&d).expect("dir");
                    write(&d.join(format!("sample-{i:05}.bin")), kib * 1024, &mut rng);
                }
            }
        }
    }
}

/// Byte-for-byte equality of two files or two directory trees.
fn same_content(a: &Path, b: &Path) -> bool {
    if a.is_dir() {
        let list =
            |d: &Path| checkpoint::list_files(d).expect("list").files.into_iter().map(|(r, _)| r).collect::<Vec<_>>();
        let files = list(a);
        return b.is_dir() && files == list(b) && files.iter().all(|r| same_content(&a.join(r), &b.join(r)));
    }
    let open = |p: &Path| std::fs::File::open(p).map(|f| std::io::BufReader::with_capacity(1 << 20, f));
    let (Ok(mut x), Ok(mut y)) = (open(a), open(b)) else { return false };
    let (mut bx, mut by) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut x, &mut bx);
        if n != read_full(&mut y, &mut by) || bx[..n] != by[..n] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

fn command(setup: &Setup, tool: &str, up: bool, case: Case, file: &Path, key: &str) -> Command {
    let many = matches!(case, Case::Files { .. });
    let dir = match (up, many) {
        (true, false) => "up",
        (false, false) => "down",
        (true, true) => "push",
        (false, true) => "pull",
    };
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
            if many {
                c.arg("--recursive");
            }
            c
        }
        _ => {
            let mut c = Command::new(setup.pybench.join("bin/python"));
            let dir = match (up, many) {
                (true, true) => "up-dir",
                (false, true) => "down-dir",
                _ => dir,
            };
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
    let mut cases: Vec<Case> = env("TAP_BENCH_SIZES_MIB")
        .unwrap_or_else(|| "256,1024".into())
        .split(',')
        .filter(|s| *s != "none")
        .map(|s| Case::File { bytes: s.parse::<u64>().expect("TAP_BENCH_SIZES_MIB: sizes in MiB") << 20 })
        .collect();
    let files = env("TAP_BENCH_FILES").unwrap_or_else(|| "2000x32".into());
    if files != "none" {
        let (count, kib) = files.split_once('x').expect("TAP_BENCH_FILES: COUNTxKIB");
        cases.push(Case::Files { count: count.parse().expect("count"), kib: kib.parse().expect("KiB") });
    }
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
        "{:<8} {:>9}  {:>10} {:>9} {:>8}  {:>10} {:>9} {:>8}",
        "tool", "size", "up MB/s", "up CPU s", "up RSS", "down MB/s", "down CPU", "down RSS"
    );
    for case in cases {
        let size = case.bytes();
        let mut best_other_up: f64 = 0.0;
        let mut best_other_down: f64 = 0.0;
        let mut results = Vec::new();
        let (mut up, mut down): (Vec<Vec<Sample>>, Vec<Vec<Sample>>) =
            (vec![vec![]; tools.len()], vec![vec![]; tools.len()]);
        // Runs outside, tools inside: every tool meets the same server state and disk cache.
        for r in 0..runs {
            let src = work.path().join(format!("src-{r}"));
            case.create(&src, size ^ r as u64);
            for (t, tool) in tools.iter().enumerate() {
                let key = match case {
                    Case::File { .. } => format!("{tool}/{size}/{r}"),
                    Case::Files { .. } if tool == "tap" => format!("set-{r}"),
                    Case::Files { .. } => format!("{tool}/set-{r}/"),
                };
                up[t].push(measure(command(&setup, tool, true, case, &src, &key)));
                let dest = work.path().join(format!("dest-{tool}-{r}"));
                down[t].push(measure(command(&setup, tool, false, case, &dest, &key)));
                assert!(
                    same_content(&src, &dest),
                    "{tool} downloaded something else than it uploaded ({})",
                    case.label()
                );
                let _ = std::fs::remove_file(&dest).or_else(|_| std::fs::remove_dir_all(&dest));
                // The server's copy goes too: a 4 GiB row x 4 tools x 3 runs would not fit.
                let _ = std::fs::remove_dir_all(root.join(BUCKET));
                std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
            }
            let _ = std::fs::remove_file(&src).or_else(|_| std::fs::remove_dir_all(&src));
        }
        for (t, tool) in tools.iter().enumerate() {
            let mbps = |s: &[Sample]| size as f64 / 1e6 / median(s.iter().map(|x| x.wall).collect());
            let cpu = |s: &[Sample]| median(s.iter().map(|x| x.cpu).collect());
            let rss = |s: &[Sample]| s.iter().map(|x| x.rss_mib).fold(0.0, f64::max);
            let row =
                (tool.clone(), mbps(&up[t]), cpu(&up[t]), rss(&up[t]), mbps(&down[t]), cpu(&down[t]), rss(&down[t]));
            if tool != "tap" {
                best_other_up = best_other_up.max(row.1);
                best_other_down = best_other_down.max(row.4);
            }
            println!(
                "{:<8} {:>9}  {:>10.0} {:>9.2} {:>7.0}M  {:>10.0} {:>9.2} {:>7.0}M",
                row.0,
                case.label(),
                row.1,
                row.2,
                row.3,
                row.4,
                row.5,
                row.6
            );
            if let Case::Files { count, .. } = case {
                let secs = |s: &[Sample]| median(s.iter().map(|x| x.wall).collect());
                println!(
                    "{:<8} {:>9}  {:>7.0} files/s up, {:.0} files/s down",
                    "",
                    "",
                    count as f64 / secs(&up[t]),
                    count as f64 / secs(&down[t])
                );
            }
            results.push(row);
        }
        if let Some(t) = results.iter().find(|r| r.0 == "tap").filter(|_| results.len() > 1) {
            let boto = results.iter().find(|r| r.0 == "boto3");
            println!(
                "  tap vs best other: upload {:.2}x, download {:.2}x throughput{}; tap RSS bound part x concurrency + 50 MiB = {} MiB",
                t.1 / best_other_up.max(1e-9),
                t.4 / best_other_down.max(1e-9),
                boto.map_or(String::new(), |b| format!("; upload CPU {:.2}x boto3's", t.2 / b.2.max(1e-9))),
                (opts.part_size >> 20) * opts.concurrency as u64 + 50
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}
