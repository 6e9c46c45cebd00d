#!/usr/bin/env python3
"""The node's first boot, executed: the user_data that infra/tap-stack.tf renders (through
`terraform test -verbose` on infra/tests/boot.tftest.hcl: the stack's own output, never a copy)
runs as root in a sandbox, with the real tap-agent and tap binaries, on the success path of
every mode and on every failure path.

The sandbox is a private mount namespace (`unshare --mount`): copy-on-write overlays over
/etc, /var, /opt and /usr/local, whose writes land in the scenario's own directory (the host's
files are never touched, and the test reads what the boot wrote from there), a tmpfs over /run
and /tmp, and a file over /dev/console. Only what reaches the outside world is a stand-in
(tools/boot-test/standins): nvidia-smi, apt-get, apt-mark, dpkg-query, curl, the aws CLI
(user_data's `aws s3 cp` of tap-agent), systemctl, rmmod, modprobe, the CloudWatch agent's
ctl, logger, reboot, and sleep (virtual time, so ten minutes of retries take none). What
`tap-agent bootstrap` asks of AWS through the SDK (the settings document and `tap` from S3,
the driver-failure counter in DynamoDB) it asks of moto on loopback (TAP_MOTO_SERVER), holding
what the stack would: the settings the stack renders, the binaries, the experiment table.

Usage: boot_test.py --tap-agent PATH --tap PATH   (root, unshare and overlayfs needed; where
they are missing it says why and stops). Ends with `boot: N passed, M failed`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
OVERLAID = ["/etc", "/var", "/opt", "/usr/local"]
TMPFS = ["/run", "/tmp"]
# What the mock provider gives the defaults (infra/tests/mocks.tfmock.hcl).
ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = f"ml-model-artifacts-dev-{ACCOUNT}-{REGION}"
TABLE = "tap-dev-experiments"
CWA_URL = f"https://amazoncloudwatch-agent-{REGION}.s3.{REGION}.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb"
AGENT_URL = "https://releases.example.com/tap-agent-1.0.0"
DRIVER = "nvidia-driver-580-server"
SETTINGS_KEY = "tap/node/boot.json"
# Bounds of one boot in the sandbox (real time; sleeps are virtual).
BOOT_TIMEOUT_S = 120
RENDER_TIMEOUT_S = 600
MOTO_START_S = 60
AWS_REQUEST_S = 60


def render() -> dict[str, tuple[str, bytes]]:
    """(user_data, boot settings document) of every run of infra/tests/boot.tftest.hcl, by run
    name: what the launch template and aws_s3_object.node_boot hold."""
    out = subprocess.run(
        ["terraform", "test", "-no-color", "-verbose", "-filter=tests/boot.tftest.hcl"],
        cwd=REPO / "infra", capture_output=True, text=True, timeout=RENDER_TIMEOUT_S,
    )
    if out.returncode != 0:
        sys.exit(f"boot: terraform test could not render user_data:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    scripts: dict[str, str] = {}
    settings: dict[str, bytes] = {}
    run = None
    for line in out.stdout.splitlines():
        m = re.match(r'\s*run "(\w+)"\.\.\. ', line)
        if m:
            run = m.group(1)
            continue
        m = re.match(r'\s*user_data\s+= "([A-Za-z0-9+/=]+)"$', line)
        if m and run and run not in scripts:
            scripts[run] = base64.b64decode(m.group(1)).decode()
        m = re.match(r'\s*content_base64\s+= "([A-Za-z0-9+/=]+)"$', line)
        if m and run and run not in settings:
            settings[run] = base64.b64decode(m.group(1))
    want = {"boot_defaults", "boot_custom_ami", "boot_nat_none", "boot_agent_url", "boot_idle", "boot_kms"}
    if set(scripts) != want or set(settings) != want:
        sys.exit(f"boot: rendered user_data for {sorted(scripts)} and settings for {sorted(settings)}, expected {sorted(want)}")
    return {r: (scripts[r], settings[r]) for r in want}


class Moto:
    """moto_server on loopback, spoken to in plain HTTP (moto does not check signatures; the
    Authorization header only names the service)."""

    def __init__(self, exe: str) -> None:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until = time.monotonic() + MOTO_START_S
        while time.monotonic() < until:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.proc.kill()
        raise SystemExit(f"boot: moto_server ({exe}) did not start in {MOTO_START_S} s")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def _request(self, method: str, path: str, service: str, body: bytes = b"", headers: dict | None = None) -> bytes:
        h = {"Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, "
                              "SignedHeaders=host, Signature=0", **(headers or {})}
        req = urllib.request.Request(f"{self.endpoint}{path}", data=body if method != "GET" else None, method=method, headers=h)
        with urllib.request.urlopen(req, timeout=AWS_REQUEST_S) as r:
            return r.read()

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=AWS_REQUEST_S)

    def put_object(self, bucket: str, key: str, body: bytes) -> None:
        # A content type of its own: urllib's default (a form) would have the body read as one.
        self._request("PUT", f"/{bucket}/{key}", "s3", body, {"Content-Type": "application/octet-stream"})

    def create_bucket(self, bucket: str) -> None:
        self._request("PUT", f"/{bucket}", "s3")

    def dynamodb(self, action: str, payload: dict) -> dict:
        out = self._request("POST", "/", "dynamodb", json.dumps(payload).encode(),
                            {"X-Amz-Target": f"DynamoDB_20120810.{action}", "Content-Type": "application/x-amz-json-1.0"})
        return json.loads(out or b"{}")

    def create_table(self, table: str) -> None:
        self.dynamodb("CreateTable", {
            "TableName": table, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "experiment_id", "AttributeType": "S"},
                                     {"AttributeName": "run_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "experiment_id", "KeyType": "HASH"},
                          {"AttributeName": "run_id", "KeyType": "RANGE"}],
        })

    def counter(self, table: str, key: str) -> int | None:
        item = self.dynamodb("GetItem", {"TableName": table, "Key": {"experiment_id": {"S": "_tap-node"}, "run_id": {"S": key}}})
        n = item.get("Item", {}).get("failures", {}).get("N")
        return int(n) if n is not None else None

    def set_counter(self, table: str, key: str, n: int) -> None:
        self.dynamodb("PutItem", {"TableName": table, "Item": {
            "experiment_id": {"S": "_tap-node"}, "run_id": {"S": key}, "failures": {"N": str(n)}}})


def sandbox_problem() -> str | None:
    """Why the sandbox cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces and overlays)"
    if not shutil.which("unshare"):
        return "needs unshare (util-linux)"
    with tempfile.TemporaryDirectory(dir=REPO / "target") as d:
        up, work = Path(d, "u"), Path(d, "w")
        up.mkdir()
        work.mkdir()
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t overlay overlay -o lowerdir=/opt,upperdir={up},workdir={work} /opt && mount -t tmpfs tmpfs /run"],
            capture_output=True, text=True, timeout=30,
        )
        if probe.returncode != 0:
            return f"cannot build the sandbox (unshare + overlayfs + tmpfs): {probe.stderr.strip()}"
    return None


@dataclass
class Boot:
    """One scenario's sandbox: its state (read by the stand-ins), overlays and results."""
    root: Path
    script: str
    settings: bytes
    tap_agent: Path
    tap: Path
    moto: Moto
    runs: list[int] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "state"

    def upper(self, path: str) -> Path:
        """Where the boot's writes under an overlaid directory landed (path is absolute)."""
        top = next(o for o in OVERLAID if path == o or path.startswith(o + "/"))
        return self.root / "upper" / top.strip("/").replace("/", "_") / path[len(top) + 1:]

    def setup(self, driver: str = "ok", failures: dict[str, str | int] | None = None,
              holds: list[str] | None = None, open_packages: list[str] | None = None,
              counters: dict[str, int] | None = None, urls: dict[str, Path] | None = None) -> None:
        s = self.state
        (s / "fail").mkdir(parents=True)
        (s / "driver").write_text(driver)
        (s / "driver-package").write_text(DRIVER)
        (s / "holds").write_text("".join(h + "\n" for h in holds or []))
        (s / "open-packages").write_text("".join(p + "\n" for p in open_packages or []))
        for name, n in (failures or {}).items():
            (s / "fail" / name).write_text(str(n))
        # What the stack holds in AWS: the settings document and `tap` in the artifacts bucket
        # (a download that always fails is an object that is not there), the experiment table
        # (an unreachable one is a table that is not there) with the counters so far.
        failing = failures or {}
        self.moto.reset()
        self.moto.create_bucket(BUCKET)
        if failing.get("boot.json") != "always":
            self.moto.put_object(BUCKET, SETTINGS_KEY, self.settings)
        if failing.get("tap") != "always":
            self.moto.put_object(BUCKET, "tap/bin/tap", self.tap.read_bytes())
        if failing.get("dynamodb") != "always":
            self.moto.create_table(TABLE)
            for key, n in (counters or {}).items():
                self.moto.set_counter(TABLE, key, n)
        (s / "cwa.deb").write_text("!<arch> amazon-cloudwatch-agent deb (stand-in)\n")
        served = {CWA_URL: s / "cwa.deb", **(urls or {})}
        (s / "urls").write_text("".join(f"{u} {p}\n" for u, p in served.items()))
        objects = s / "s3" / BUCKET / "tap" / "bin"
        objects.mkdir(parents=True)
        (objects / "tap-agent").symlink_to(self.tap_agent)
        for o in OVERLAID:
            name = o.strip("/").replace("/", "_")
            (self.root / "upper" / name).mkdir(parents=True)
            (self.root / "work" / name).mkdir(parents=True)
        (self.root / "console").touch()
        (self.root / "home").mkdir()
        (self.root / "user-data.sh").write_text(self.script)

    def boot(self, again: bool = False) -> int:
        """Runs the user_data (or, with again, the copy it left for after its reboot) as cloud-init
        would, then the post-boot checks, all inside one sandbox; returns the boot's exit code."""
        r = self.root
        # The repository (stand-ins, binaries, this scenario's directory) may itself lie under a
        # masked directory (a CI clone in /tmp): it is held open before the masks and bound back
        # over its own path after them.
        mounts = "\n".join(
            [f"exec 3<{REPO}"]
            + [f"mount -t overlay overlay -o lowerdir={o},upperdir={r}/upper/{o.strip('/').replace('/', '_')},"
               f"workdir={r}/work/{o.strip('/').replace('/', '_')} {o}" for o in OVERLAID]
            + [f"mount -t tmpfs tmpfs {t}" for t in TMPFS]
            + [f"mkdir -p {REPO} && mount --no-canonicalize --bind /proc/self/fd/3 {REPO}", "exec 3<&-"]
            + [f"mount --bind {r}/console /dev/console"]
        )
        script = "/var/lib/tap/bootstrap.sh" if again else f"{r}/user-data.sh"
        n = len(self.runs)
        inner = f"""set -eu
{mounts}
set +e
export PATH={STANDINS}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export BOOT_STATE={self.state} HOME={r}/home TAP_HOME={r}/home/.tap
export AWS_ENDPOINT_URL={self.moto.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
bash {script}
echo $? > {r}/rc.{n}
/bin/sleep 0.3  # lets the log pipe (tee | logger) drain
if [ -x /usr/local/bin/tap-agent ]; then
  /usr/local/bin/tap-agent --check-config --config /etc/tap/agent.toml > {r}/check-config.{n} 2>&1; echo $? >> {r}/check-config.{n}
fi
if [ -x /usr/local/bin/tap ]; then
  /usr/local/bin/tap --config /etc/tap/config.toml config show > {r}/config-show.{n} 2>&1; echo $? >> {r}/config-show.{n}
fi
"""
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", inner],
                              timeout=BOOT_TIMEOUT_S, check=False, capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        if not (r / f"rc.{n}").exists():
            raise AssertionError(f"the sandbox could not be built or the boot did not run: {done.stderr.strip()[-2000:]}")
        rc = int((r / f"rc.{n}").read_text())
        self.runs.append(rc)
        return rc

    # What the boot left behind.
    def file(self, path: str) -> str | None:
        p = self.upper(path)
        return p.read_text(errors="replace") if p.exists() else None

    def calls(self, name: str) -> list[str]:
        log = self.state / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [l for l in lines if l.split(" ", 1)[0] == name]

    def failed(self) -> list[str]:
        return (self.file("/var/lib/tap/bootstrap-failed") or "").splitlines()

    def enabled(self) -> set[str]:
        d = self.state / "enabled"
        return {p.name for p in d.iterdir()} if d.exists() else set()

    def slept(self) -> int:
        f = self.state / "slept"
        return sum(int(x) for x in f.read_text().split()) if f.exists() else 0

    def check(self, kind: str, run: int = -1) -> tuple[int, str]:
        """(exit code, output) of the post-boot check `check-config` or `config-show`."""
        n = len(self.runs) - 1 if run < 0 else run
        p = self.root / f"{kind}.{n}"
        if not p.exists():
            return (-1, f"{kind} did not run (binary not installed)")
        text = p.read_text().rstrip("\n").rsplit("\n", 1)
        return (int(text[-1]), text[0] if len(text) > 1 else "")


def expect(cond: bool, what: str, boot: Boot) -> None:
    if not cond:
        journal = boot.state / "journal.log"
        tail = journal.read_text()[-2500:] if journal.exists() else "(no journal)"
        raise AssertionError(f"{what}\n--- bootstrap journal (tail) ---\n{tail}")


def installed_and_configured(b: Boot, stack: str = "tap-dev") -> None:
    """What every boot that got the binaries must leave: the agent's config valid, its unit
    written and enabled, tap configured for the stack."""
    rc, out = b.check("check-config")
    expect(rc == 0, f"tap-agent --check-config failed ({rc}): {out}", b)
    unit = b.file("/etc/systemd/system/tap-agent.service") or ""
    expect("ExecStart=/usr/local/bin/tap-agent --config /etc/tap/agent.toml run" in unit, "tap-agent.service written", b)
    expect("tap-agent.service" in b.enabled(), f"tap-agent.service enabled: {b.enabled()}", b)
    rc, out = b.check("config-show")
    expect(rc == 0 and stack in out, f"tap config show names the stack {stack} ({rc}): {out}", b)


def success(b: Boot, stack: str = "tap-dev") -> None:
    expect(b.runs[-1] == 0, f"exit 0, got {b.runs[-1]}; failures: {b.failed()}", b)
    expect(b.failed() == [], f"nothing in bootstrap-failed: {b.failed()}", b)
    installed_and_configured(b, stack)
    cw = json.loads((b.state / "cwagent-config.json").read_text())
    expect(cw["metrics"]["namespace"] == "Tap/Host", "the CloudWatch agent got tap's config", b)
    expect(cw["logs"]["logs_collected"]["files"]["collect_list"][0]["log_group_name"] == "/tap/dev/training",
           "the CloudWatch agent ships the training logs", b)
    expect(any("-a fetch-config -m ec2 -s -c file:/etc/tap/cwagent.json" in c for c in b.calls("amazon-cloudwatch-agent-ctl")),
           "the CloudWatch agent was started with that config", b)


def gpu_ok_touches_no_driver(b: Boot) -> None:
    expect(not any(" install " in f" {c} " and DRIVER in c for c in b.calls("apt-get")), "no driver install when the GPU works", b)
    expect(b.calls("reboot") == [], "no reboot", b)


# --- scenarios: (name, user_data run, setup, check) ---------------------------------------

def mode_success(extra: Callable[[Boot], None] | None = None):
    def check(b: Boot) -> None:
        b.setup(urls={AGENT_URL: b.tap_agent, "https://releases.example.com/tap": b.tap})
        b.boot()
        success(b)
        gpu_ok_touches_no_driver(b)
        if extra:
            extra(b)
    return check


def defaults_extra(b: Boot) -> None:
    expect(any(f"s3://{BUCKET}/tap/bin/tap-agent" in c for c in b.calls("aws")), "tap-agent comes from the artifacts bucket", b)
    expect(len(b.script.encode()) < 2048, f"user_data is a launcher under 2 KB ({len(b.script.encode())} bytes)", b)
    toml = b.file("/etc/tap/agent.toml") or ""
    expect('on_fatal = "replace"' in toml and "scale_to_zero = false" in toml, "agent config from Terraform values", b)


def agent_url_extra(b: Boot) -> None:
    got = [c for c in b.calls("curl") if "releases.example.com" in c]
    expect(len(got) == 2 and any(c.endswith(AGENT_URL) for c in got), f"both binaries from agent_binary_url: {got}", b)
    expect(not any("s3 cp" in c for c in b.calls("aws")), "nothing from S3", b)


def idle_extra(b: Boot) -> None:
    toml = b.file("/etc/tap/agent.toml") or ""
    expect("scale_to_zero = true" in toml and "minutes = 60" in toml, "the idle rule is in the agent config", b)


def volta_driver_installs(b: Boot) -> None:
    b.setup(driver="install", holds=["nvidia-driver-570-open", "linux-modules-nvidia-570-open-aws"],
            open_packages=["nvidia-driver-570-open", "nvidia-dkms-570-open"])
    b.boot()
    success(b)
    apt = b.calls("apt-get")
    expect(all("DPkg::Lock::Timeout=600" in c for c in apt), "every apt-get waits for the dpkg lock", b)
    expect(any(c.endswith("unhold nvidia-driver-570-open linux-modules-nvidia-570-open-aws") for c in b.calls("apt-mark")),
           f"holds on the open driver released: {b.calls('apt-mark')}", b)
    expect(any(c.endswith("purge -y nvidia-driver-570-open nvidia-dkms-570-open") for c in apt), f"open modules purged: {apt}", b)
    order = [c for c in apt if " purge " in c or c.endswith(f"install -y {DRIVER}")]
    expect(len(order) == 2 and " purge " in order[0], f"purged before the install: {order}", b)
    expect(b.calls("rmmod") and b.calls("modprobe"), "the old module unloaded and the new one loaded", b)
    expect(b.calls("reboot") == [], "no reboot when modprobe was enough", b)


def volta_driver_needs_one_reboot(b: Boot) -> None:
    b.setup(driver="reboot")
    expect(b.boot() == 0, "the first boot ends cleanly before its reboot", b)
    expect(len(b.calls("reboot")) == 1, "rebooted once", b)
    expect("tap-bootstrap.service" in b.enabled(), "the bootstrap runs again after the reboot", b)
    unit = b.file("/etc/systemd/system/tap-bootstrap.service") or ""
    expect("ExecStart=/var/lib/tap/bootstrap.sh" in unit and "After=network-online.target" in unit, f"rerun unit: {unit}", b)
    b.boot(again=True)
    success(b)
    expect(len(b.calls("reboot")) == 1, "no second reboot", b)
    expect("tap-bootstrap.service" not in b.enabled(), "the rerun unit is disabled once done", b)
    installs = [c for c in b.calls("apt-get") if c.endswith(f"install -y {DRIVER}")]
    expect(len(installs) == 1, f"the driver installed once: {installs}", b)


def driver_install_fails(b: Boot) -> None:
    b.setup(driver="broken", failures={"driver-install": "always"})
    rc = b.boot()
    expect(rc != 0, "a node without a driver exits non-zero", b)
    expect(any(f.startswith("no working NVIDIA driver (failure 1 of ami-0123456789abcdef0") for f in b.failed()),
           f"reported in bootstrap-failed: {b.failed()}", b)
    expect(len(b.failed()) == 1, f"nothing else failed: {b.failed()}", b)
    console = (b.root / "console").read_text()
    expect("TAP BOOTSTRAP FAILED: no working NVIDIA driver" in console, "reported on the console", b)
    expect("TAP BOOTSTRAP FAILED" in (b.state / "journal.log").read_text(), "reported in the journal", b)
    installed_and_configured(b)
    expect('on_fatal = "replace"' in (b.file("/etc/tap/agent.toml") or ""), "below the cap the node is replaced", b)
    expect(b.moto.counter(TABLE, "driver-failures/ami-0123456789abcdef0") == 1, "counted once", b)
    expect(b.calls("reboot") == [], "no reboot after a failed install", b)


def driver_failures_past_the_cap_hold_the_node(b: Boot) -> None:
    b.setup(driver="broken", failures={"driver-install": "always"},
            counters={"driver-failures/ami-0123456789abcdef0": 3})
    expect(b.boot() != 0, "non-zero exit", b)
    expect(any("failure 4 of ami-0123456789abcdef0; the first 3 are replaced" in f for f in b.failed()), f"{b.failed()}", b)
    toml = b.file("/etc/tap/agent.toml") or ""
    expect('on_fatal = "drain"' in toml and 'on_fatal = "replace"' not in toml,
           "past the cap the node stays up (drain) instead of powering off into another replacement", b)
    installed_and_configured(b)


def driver_counter_unreachable_holds_the_node(b: Boot) -> None:
    b.setup(driver="broken", failures={"driver-install": "always", "dynamodb": "always"})
    expect(b.boot() != 0, "non-zero exit", b)
    expect(any("failure ? of" in f for f in b.failed()), f"{b.failed()}", b)
    expect('on_fatal = "drain"' in (b.file("/etc/tap/agent.toml") or ""), "an unknown count is treated as past the cap", b)


def driver_fails_even_after_the_reboot(b: Boot) -> None:
    b.setup(driver="broken")
    expect(b.boot() == 0, "first boot reboots", b)
    expect(len(b.calls("reboot")) == 1, "rebooted once", b)
    expect(b.boot(again=True) != 0, "after the reboot the failure is reported", b)
    expect(len(b.calls("reboot")) == 1, "never a second reboot", b)
    expect(any(f.startswith("no working NVIDIA driver (failure 1 of") for f in b.failed()), f"{b.failed()}", b)
    installed_and_configured(b)


def apt_unreachable_fails_the_driver(b: Boot) -> None:
    b.setup(driver="install", failures={"apt-update": "always"})
    expect(b.boot() != 0, "non-zero exit", b)
    expect(any(f.startswith("no working NVIDIA driver") for f in b.failed()), f"{b.failed()}", b)
    expect(not any(c.endswith(f"install -y {DRIVER}") for c in b.calls("apt-get")), "no install without a package index", b)


def download_fails(what: str, failure: str, reported: list[str], binary_missing: str | None):
    def check(b: Boot) -> None:
        b.setup(failures={failure: "always"})
        expect(b.boot() != 0, "non-zero exit", b)
        expect(b.failed() == reported, f"bootstrap-failed is {b.failed()}, expected {reported}", b)
        expect(b.slept() >= 590, f"{what}: retried for ten minutes before giving up (slept {b.slept()} s)", b)
        if binary_missing:
            expect(b.file(binary_missing) is None, f"{binary_missing} not installed", b)
        if what != "tap-agent":
            rc, out = b.check("check-config")
            expect(rc == 0, f"tap-agent still installed and configured: {out}", b)
            expect("tap-agent.service" in b.enabled(), "tap-agent still enabled, so the node reports", b)
    return check


def settings_unreadable(b: Boot) -> None:
    b.setup(failures={"boot.json": "always"})
    expect(b.boot() != 0, "non-zero exit", b)
    failed = b.failed()
    expect(len(failed) == 1 and failed[0].startswith(f"boot settings: s3://{BUCKET}/{SETTINGS_KEY}: "),
           f"the settings named in bootstrap-failed: {failed}", b)
    expect("NoSuchKey" in failed[0] or "does not exist" in failed[0], f"with S3's reason: {failed}", b)
    expect(b.slept() >= 590, f"retried for ten minutes first (slept {b.slept()} s)", b)
    console = (b.root / "console").read_text()
    expect("TAP BOOTSTRAP FAILED: boot settings" in console, "reported on the console", b)


def download_recovers_after_minutes(b: Boot) -> None:
    # S3 unreachable for 20 tries (200 s of a new stack's network coming up), then fine.
    b.setup(failures={"tap-agent": 20, "amazon-cloudwatch-agent.deb": 12})
    b.boot()
    success(b)
    expect(b.slept() == 320, f"waited 200 s for tap-agent and 120 s for the CloudWatch agent, slept {b.slept()} s", b)
    tries = [c for c in b.calls("aws") if c.endswith("/tap/bin/tap-agent /tmp/tap-agent")]
    expect(len(tries) == 21, f"21 tries of the tap-agent download: {len(tries)}", b)


SCENARIOS: list[tuple[str, str, Callable[[Boot], None]]] = [
    ("defaults: success", "boot_defaults", mode_success(defaults_extra)),
    ("custom AMI: success", "boot_custom_ami", mode_success()),
    ("no NAT: success", "boot_nat_none", mode_success()),
    ("agent_binary_url: success", "boot_agent_url", mode_success(agent_url_extra)),
    ("idle rule: success", "boot_idle", mode_success(idle_extra)),
    ("KMS: success", "boot_kms", mode_success()),
    ("Volta driver: holds released, open modules purged, installed, loaded", "boot_defaults", volta_driver_installs),
    ("Volta driver: one reboot, then the bootstrap completes", "boot_defaults", volta_driver_needs_one_reboot),
    ("driver install fails: reported, counted, agent still installed", "boot_defaults", driver_install_fails),
    ("driver failures past the cap: the node is held, not replaced", "boot_defaults", driver_failures_past_the_cap_hold_the_node),
    ("driver failure count unreachable: the node is held", "boot_defaults", driver_counter_unreachable_holds_the_node),
    ("driver still broken after its reboot: reported, no second reboot", "boot_defaults", driver_fails_even_after_the_reboot),
    ("apt mirrors unreachable: driver failure reported", "boot_defaults", apt_unreachable_fails_the_driver),
    ("CloudWatch agent download fails", "boot_defaults",
     download_fails("cloudwatch agent", "amazon-cloudwatch-agent.deb", ["CloudWatch agent install", "CloudWatch agent start"], None)),
    ("tap-agent download fails", "boot_defaults",
     download_fails("tap-agent", "tap-agent", ["tap-agent download", "tap-agent service"], "/usr/local/bin/tap-agent")),
    ("tap download fails", "boot_defaults",
     download_fails("tap", "tap", ["tap download", "tap config"], "/usr/local/bin/tap")),
    ("downloads that succeed after minutes of failures", "boot_defaults", download_recovers_after_minutes),
    ("the stack's boot settings cannot be read: reported", "boot_defaults", settings_unreadable),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tap-agent", type=Path, required=True)
    ap.add_argument("--tap", type=Path, required=True)
    ap.add_argument("--keep", action="store_true", help="keep each scenario's directory")
    ap.add_argument("-k", default="", help="run only scenarios whose name contains this")
    a = ap.parse_args()
    (REPO / "target").mkdir(exist_ok=True)
    why = sandbox_problem()
    if why:
        print(f"boot: skipped: {why}")
        print("boot: 0 passed, 0 failed")
        return 0
    scripts = render()
    moto_exe = os.environ.get("TAP_MOTO_SERVER")
    if not moto_exe:
        sys.exit("boot: TAP_MOTO_SERVER must name moto_server (scripts/tools.sh installs it)")
    moto = Moto(moto_exe)
    passed = failed = 0
    for name, run, check in SCENARIOS:
        if a.k not in name:
            continue
        root = Path(tempfile.mkdtemp(prefix="boot-", dir=REPO / "target"))
        script, settings = scripts[run]
        b = Boot(root, script, settings, a.tap_agent.resolve(), a.tap.resolve(), moto)
        try:
            check(b)
            passed += 1
            print(f"ok      {name}")
        except Exception as e:  # noqa: BLE001 - every failure of a scenario is reported, the rest still run
            failed += 1
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            print(f"FAILED  {name}\n{detail}")
        finally:
            if a.keep:
                print(f"        kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    moto.stop()
    print(f"boot: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
