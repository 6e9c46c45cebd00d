"""The implementation behind :mod:`tapml`'s functions (see the package's docstring).

Under ``tap run`` the environment says where everything goes (``TAP_METRICS_FILE``,
``TAP_CHECKPOINT_DIR``, ``TAP_HPARAMS_FILE``, ...); outside it every function does the local
thing. Nothing here depends on anything outside the standard library.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

__all__ = [
    "TapmlError",
    "TapmlWarning",
    "under_tap",
    "rank",
    "log",
    "flush",
    "hparams",
    "checkpoint",
    "restored",
    "restored_step",
    "should_stop",
    "time_left",
    "checkpoint_due",
    "checkpoint_interval",
]


class TapmlError(Exception):
    """Something tap gave this process is unusable (an unreadable hyperparameters file, say)."""


class TapmlWarning(UserWarning):
    """A value tapml refused and skipped (a non-finite metric, say); training goes on."""


#: Metrics are written at least this often (seconds), and at exit.
FLUSH_EVERY_S = 1.0
#: Buffered metric lines kept at most while the metrics file cannot be written; older ones
#: are dropped (and counted in a warning).
MAX_BUFFERED_LINES = 100_000
#: Buffered lines that make the flusher write at once rather than at the next second.
FLUSH_LINES = 10_000
#: Where checkpoints go outside ``tap run``.
LOCAL_CHECKPOINT_DIR = "checkpoints"
#: The signal tap sends on an interruption notice unless ``--interrupt-signal`` says otherwise.
DEFAULT_INTERRUPT_SIGNAL = "SIGUSR1"
#: How long a checkpoint waits, at most, for tap to have taken the previous one (its snapshot
#: takes milliseconds once tap read the line, which it does every 50 ms).
ACK_WAIT_S = 10.0
#: The periodic checkpoint interval before tap measured one (``tap_core::goodput::FIRST_CHECKPOINT_S``),
#: and outside ``tap run``.
FIRST_CHECKPOINT_S = 300.0
#: The longest metric, tag or hyperparameter name, in bytes (``tap_core::names::MAX_NAME_LEN``).
MAX_NAME_LEN = 256
_NAME_PUNCTUATION = "_.-/@:+%()[]"
#: A decimal number as a hyperparameter's text: ``3``, ``-2``, ``0.05``, ``1e-4`` (not
#: ``inf``, ``nan``, ``1_000`` or `` 3``, which stay text).
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


def name_problem(name: str) -> Optional[str]:
    """Why tap refuses ``name`` as a metric, tag or hyperparameter name, or None when it
    takes it. The one rule of ``tap_core::names``: 1-256 of ``A-Z a-z 0-9 _ . - / @ : + % ( )
    [ ]``, not starting with ``-``, ``/`` only between segments that are not ``.`` or ``..``
    (``train/loss``, ``eval/acc@1``, ``lr-AdamW`` are names). Both sides are tested against
    the same vectors, ``spec/names.json``."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    for i, c in enumerate(name):
        if not ((c.isascii() and c.isalnum()) or c in _NAME_PUNCTUATION):
            if c.isspace():
                return f"it holds white space ({c!r}) at character {i + 1}"
            return f"it holds {c!r} at character {i + 1}"
    if len(name) > MAX_NAME_LEN:
        return f"it is {len(name)} bytes long, more than {MAX_NAME_LEN}"
    if name.startswith("-"):
        return "it starts with '-'"
    for seg in name.split("/"):
        if seg == "":
            return "it has an empty segment ('/' at its start or end, or '//')"
        if seg in (".", ".."):
            return f"it has a segment {seg!r}"
    return None


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name)
    return value if value else None


def under_tap() -> bool:
    """True when this process runs under ``tap run`` (``TAP_RUN_ID`` is set)."""
    return _env("TAP_RUN_ID") is not None


def rank() -> int:
    """This process's global rank in a ``torch.distributed`` job (its process group's, else
    ``RANK``; 0 otherwise).

    Only rank 0 records metrics and publishes checkpoints: tap keeps one series and one
    checkpoint per job.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None:  # imported by the script: its process group knows best
        try:
            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank())
        except Exception:
            pass
    raw = _env("RANK")
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        return 0


def sharded_job() -> bool:
    """True when this process runs under a ``tap run`` that is one rank of a sharded job of
    several ranks (``TAP_WORLD_SIZE`` > 1: a managed job of several nodes, or ``tap run
    --group``): every rank's ``tap run`` stores its checkpoint directory as its shard of each
    step, and a step is restorable once every rank's shard is stored."""
    raw = _env("TAP_WORLD_SIZE")
    try:
        return raw is not None and int(raw) > 1
    except ValueError:
        return False


def _local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``, which torchrun sets; 0 otherwise)."""
    try:
        return int(_env("LOCAL_RANK") or 0)
    except ValueError:
        return 0


def _local_world_size() -> int:
    """How many processes run on this node (``LOCAL_WORLD_SIZE``, which torchrun sets; 1
    otherwise)."""
    try:
        return max(1, int(_env("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        return 1


def _node_barrier() -> None:
    """Waits until every process of the job has left its checkpoint block (one barrier of the
    script's process group), so the node's first process publishes a complete shard."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        raise TapmlError(
            "tapml.checkpoint: several processes on this node (LOCAL_WORLD_SIZE) write one shard, "
            "which needs torch.distributed initialised to agree when it is complete"
        )
    dist.barrier()


def publishes_checkpoints() -> bool:
    """Whether :func:`checkpoint` publishes in this process: in a sharded job, the first
    process on each node (``LOCAL_RANK`` 0: its ``tap run``'s shard); otherwise rank 0 alone
    (tap keeps one checkpoint per job)."""
    return _local_rank() == 0 if sharded_job() else rank() == 0


# --------------------------------------------------------------------------------------
# Metrics


class _Metrics:
    """Buffered JSON lines to ``TAP_METRICS_FILE`` (stderr outside tap), flushed by a daemon
    thread at least every :data:`FLUSH_EVERY_S` and at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._lines: list = []
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._dropped = 0
        self._failing: Optional[str] = None
        self.last_step: Optional[int] = None
        #: Refused metric names already warned about.
        self.refused_names: set = set()
        #: Offset in TAP_METRICS_FILE just past this process's last checkpoint line.
        self.announced_end: Optional[int] = None

    def _reset_after_fork(self) -> None:
        # A forked child (a DataLoader worker) must not write its parent's buffered lines
        # again, nor wait on a lock some parent thread held at the fork.
        self.__init__()  # type: ignore[misc]

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            n = len(self._lines)
            if n > MAX_BUFFERED_LINES and self._failing is not None:
                # The file cannot be written: keep the newest, count what goes.
                drop = n - MAX_BUFFERED_LINES + MAX_BUFFERED_LINES // 10
                del self._lines[:drop]
                self._dropped += drop
            elif n >= FLUSH_LINES:
                self._wake.set()  # a fast loop: write now, not at the next second
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tapml-metrics", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY_S)
            self._wake.clear()
            self.flush()

    def flush(self, extra: Optional[str] = None) -> None:
        """Writes what is buffered (then ``extra``, a line that must follow it) in one write."""
        with self._lock:
            lines = self._lines
            if extra is not None:
                lines = lines + [extra]
            if not lines:
                return
            data = "".join(line + "\n" for line in lines)
            path = _env("TAP_METRICS_FILE")
            try:
                if path is None:
                    sys.stderr.write("".join(_shown(line) + "\n" for line in lines))
                    sys.stderr.flush()
                else:
                    # One write per flush, O_APPEND: ranks sharing the file never interleave
                    # inside a line.
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    try:
                        view = memoryview(data.encode())
                        while view:
                            view = view[os.write(fd, view) :]
                        if extra is not None:
                            self.announced_end = os.lseek(fd, 0, os.SEEK_CUR)
                    finally:
                        os.close(fd)
            except OSError as e:
                if self._failing is None:
                    warnings.warn(f"tapml: cannot write metrics to {path}: {e}; keeping them buffered", TapmlWarning, stacklevel=3)
                self._failing = str(e)
                if extra is not None:
                    raise
                return
            if self._failing is not None:
                self._failing = None
            self._lines = []
            if self._dropped:
                warnings.warn(f"tapml: {self._dropped} metric lines were dropped while {path} could not be written", TapmlWarning, stacklevel=3)
                self._dropped = 0


def _shown(line: str) -> str:
    """A metrics line as stderr shows it outside tap: ``tapml: step 10  loss=0.4``."""
    record = json.loads(line)
    step = record.pop("step", None)
    if record.pop("checkpoint", False):
        return f"tapml: checkpoint of step {step} published in {_checkpoint_dir()}"
    values = "  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
    return f"tapml: step {step}  {values}"


_metrics = _Metrics()
#: At most this many distinct refused names are warned about.
_MAX_REFUSED_NAMES_SAID = 100
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_metrics._reset_after_fork)
atexit.register(lambda: _metrics.flush())


def _number(name: str, value: Any) -> Optional[float]:
    """``value`` as a finite float, or None after a warning naming the metric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # numpy scalars and one-element tensors (torch, jax) convert themselves.
        item = getattr(value, "item", None)
        if isinstance(value, (str, bytes, bool)) or not callable(item):
            warnings.warn(
                f"tapml.log: metric {name!r} is {type(value).__name__} {value!r:.60}, not a number; skipped",
                TapmlWarning,
                stacklevel=3,
            )
            return None
        try:
            value = item()
        except Exception as e:  # a tensor of more than one element, say
            warnings.warn(f"tapml.log: metric {name!r} is not a single number ({e}); skipped", TapmlWarning, stacklevel=3)
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            warnings.warn(f"tapml.log: metric {name!r} is {type(value).__name__}, not a number; skipped", TapmlWarning, stacklevel=3)
            return None
    f = float(value)
    if not math.isfinite(f):
        warnings.warn(f"tapml.log: metric {name!r} is {f}, not finite; skipped", TapmlWarning, stacklevel=3)
        return None
    return f


def _check_step(what: str, step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        item = getattr(step, "item", None)
        if callable(item) and not isinstance(step, (str, bytes)):
            step = item()
        if isinstance(step, bool) or not isinstance(step, int):
            hint = " (metrics go as keywords: tapml.log(step=10, loss=0.4))" if what == "tapml.log" else ""
            raise TypeError(f"{what}: step must be an int, got {type(step).__name__} {step!r:.60}{hint}")
    if step < 0:
        raise ValueError(f"{what}: step must be >= 0, got {step}")
    return step


# The line's field for when it was written (tap_core::runs::TIMESTAMP_FIELD), reserved as
# step and checkpoint are.
_TIMESTAMP = "_timestamp"
_RESERVED = ("step", "checkpoint", _TIMESTAMP)


def log(step: Optional[int] = None, **metrics: Any) -> None:
    """Records ``metrics`` at ``step`` (the previous step + 1 when None).

    Names are what the ecosystem writes (``train/loss``, ``eval/acc@1``; the rule is
    :func:`name_problem`). A value that is not a finite number, or a name tap refuses, is
    skipped alone with a :class:`TapmlWarning` (once per name); the line's other values are
    kept and training never stops for a metric. Lines are buffered and
    written at least every second and at exit. Only rank 0 (see :func:`rank`) records.
    """
    if step is not None:
        step = _check_step("tapml.log", step)
    if rank() != 0:
        return
    if step is None:
        step = 0 if _metrics.last_step is None else _metrics.last_step + 1
    record: Dict[str, Any] = {"step": step}
    for name, value in metrics.items():
        problem = "it is reserved" if name in _RESERVED else name_problem(name)
        if problem is not None:
            # Said once per name (a training loop logs the same names every step).
            if name not in _metrics.refused_names and len(_metrics.refused_names) < _MAX_REFUSED_NAMES_SAID:
                _metrics.refused_names.add(name)
                warnings.warn(
                    f"tapml.log: metric name {name[:80]!r} is refused: {problem}; skipped (the other values are kept)",
                    TapmlWarning,
                    stacklevel=2,
                )
            continue
        f = _number(name, value)
        if f is not None:
            record[name] = value if type(value) is int else f
    _metrics.last_step = step
    if len(record) > 1:
        # When the step ended: lines reach tap up to a second later (they are buffered), and
        # the goodput's step times are these.
        record[_TIMESTAMP] = round(time.time(), 3)
        _metrics.add(json.dumps(record, separators=(",", ":")))


def flush() -> None:
    """Writes buffered metrics now (they are written at least every second anyway)."""
    _metrics.flush()


# --------------------------------------------------------------------------------------
# Hyperparameters


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _typed(text: str) -> Union[int, float, str]:
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        f = float(text)
        if math.isfinite(f):
            return f
    return text


def hparams(defaults: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The run's hyperparameters (``tap params``), numbers as numbers, over ``defaults``.

    tap stores every value as text; ``"0.05"`` comes back as ``0.05`` and ``"3"`` as ``3``,
    anything else stays text. Outside ``tap run``: ``defaults`` (or ``{}``).
    Raises :class:`TapmlError` when tap's file is unreadable.
    """
    out: Dict[str, Any] = dict(defaults or {})
    path = _env("TAP_HPARAMS_FILE")
    if path is None:
        return out
    try:
        raw = _read_json(path)
    except (OSError, ValueError) as e:
        raise TapmlError(f"tapml.hparams: cannot read {path}: {e}") from e
    if not isinstance(raw, dict):
        raise TapmlError(f"tapml.hparams: {path} is not a JSON object")
    for name, value in raw.items():
        out[name] = _typed(value) if isinstance(value, str) else value
    return out


# --------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_dir() -> Path:
    return Path(_env("TAP_CHECKPOINT_DIR") or LOCAL_CHECKPOINT_DIR)


def _staging_root(ckpt: Path) -> Path:
    # Beside the checkpoint directory, not in it (tap uploads everything in it), and on the
    # same filesystem, so publishing is renames.
    return ckpt.absolute().parent / f".{ckpt.absolute().name}.tapml"


_open_checkpoint: Optional[int] = None
_open_lock = threading.Lock()
#: Set once this process published a checkpoint: the directory then no longer holds the
#: restored one.
_published = False


def _renameat2_exchange() -> Optional[Callable[[str, str], None]]:
    """``renameat2(RENAME_EXCHANGE)``: swaps two directories in one step (Linux ≥ 3.15)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: str, b: str) -> None:
        if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), a)

    return exchange


_exchange = _renameat2_exchange()


#: Checkpoint entries already warned about (said once per process, as tap says them once per run).
_warned_entries: set = set()


def _work_in_progress(name: str) -> bool:
    """The names tap takes for a file still being written (tap's checkpoint::work_in_progress)."""
    return name.endswith(".tmp") or name.endswith("~") or ".tmp." in name or ".tmp-" in name


def _warn_unstorable(stage: Path) -> None:
    """tap stores regular files (and links to files inside the checkpoint, as those files): a
    link that leaves the checkpoint, a FIFO, socket or device is left out by tap while every
    other file is stored, and recorded in the checkpoint's manifest. Each gets one warning per
    process here, as do files named as work in progress (``.tmp``, ``.tmp.``, ``.tmp-``, a
    trailing ``~``), which tap does not store."""
    root = stage.resolve()

    def warn(rel: Path, why: str) -> None:
        key = str(rel)
        if key not in _warned_entries and len(_warned_entries) < 1000:
            _warned_entries.add(key)
            warnings.warn(f"tapml.checkpoint: {rel} {why}", TapmlWarning, stacklevel=7)

    for dirpath, dirnames, filenames in os.walk(stage):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(stage)
            if p.is_symlink():
                target = p.resolve()
                inside = target.is_file() and (target == root or root in target.parents)
                if not inside:
                    warn(rel, "is a symbolic link to something that is not a file inside the checkpoint; tap leaves it out (copy the file instead)")
            elif name in filenames and not p.is_file():
                warn(rel, "is not a regular file (a FIFO, socket or device); tap leaves it out")
            elif name in filenames and _work_in_progress(name):
                warn(rel, "is named as work in progress (.tmp, .tmp., .tmp-, ~), which tap does not store")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            # Only regular files: opening a FIFO would block, and a link's target is not ours.
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _wait_for_ack() -> None:
    """Waits (bounded) until tap took the checkpoint this process announced last: tap
    snapshots the directory when it reads the line and then writes the line's end offset to
    ``TAP_CHECKPOINT_ACK``. Replacing the directory before that could put part of this
    checkpoint into the previous one's snapshot."""
    path, end = _env("TAP_CHECKPOINT_ACK"), _metrics.announced_end
    if path is None or end is None:
        return
    until = time.monotonic() + ACK_WAIT_S
    while True:
        try:
            with open(path, encoding="ascii") as f:
                if int(f.read().strip() or 0) >= end:
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() >= until:
            warnings.warn(
                f"tapml.checkpoint: tap has not taken the previous checkpoint after {ACK_WAIT_S:.0f} s; publishing over it",
                TapmlWarning,
                stacklevel=4,
            )
            return
        time.sleep(0.005)


def _publish(stage: Path, ckpt: Path, root: Path) -> None:
    """Makes ``stage``'s content the content of ``ckpt``: in one step where the system can
    swap two directories, else entry by entry (the old entries out, then the new ones in)."""
    _wait_for_ack()
    ckpt.mkdir(parents=True, exist_ok=True)
    old = root / f"old-{uuid.uuid4().hex[:12]}"
    if _exchange is not None:
        try:
            _exchange(str(stage), str(ckpt))
            stage.rename(old)  # ``stage`` now names the previous checkpoint
            shutil.rmtree(old, ignore_errors=True)
            return
        except OSError:
            pass  # a filesystem without RENAME_EXCHANGE, or ckpt is a mount point
    old.mkdir()
    moved_out, moved_in = [], []
    try:
        for entry in list(ckpt.iterdir()):
            entry.rename(old / entry.name)
            moved_out.append(entry.name)
        for entry in list(stage.iterdir()):
            entry.rename(ckpt / entry.name)
            moved_in.append(entry.name)
    except OSError:
        # Put everything back: the directory holds the previous checkpoint, whole (tap's
        # last sync at exit uploads what it holds).
        for name in moved_in:
            (ckpt / name).rename(stage / name)
        for name in moved_out:
            (old / name).rename(ckpt / name)
        raise
    _fsync_dir(ckpt)
    stage.rmdir()
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def checkpoint(step: int) -> Iterator[Path]:
    """Writes a checkpoint: ``with tapml.checkpoint(step) as d: torch.save(state, d / "model.pt")``.

    ``d`` is a fresh, empty staging directory. When the block ends cleanly its content
    replaces the checkpoint directory's (``TAP_CHECKPOINT_DIR``; ``./checkpoints`` outside
    tap) in one rename where Linux can swap directories, and tap is told to upload it. When
    the block raises, nothing is published and the exception goes on. One checkpoint is
    open at a time per process.

    Which processes publish (:func:`publishes_checkpoints`): in a sharded job (``tap run
    --group``, or a managed job of several nodes) every node's first process publishes its
    node's shard — call it on every rank at the same steps, and write each rank's part (FSDP's
    sharded state dict, DeepSpeed's files, DCP); a step is restorable once every rank's shard
    is stored. Elsewhere the block runs on every rank but only rank 0 publishes.
    """
    with _checkpoint(step, node_shared=sharded_job() and _local_world_size() > 1) as stage:
        yield stage


@contextlib.contextmanager
def _checkpoint(step: int, node_shared: bool) -> Iterator[Path]:
    """:func:`checkpoint`; ``node_shared``: every process of the node writes into one staging
    directory, which the node's first process publishes after a barrier (a framework's own
    finished save, published from one process, is not)."""
    global _open_checkpoint, _published
    step = _check_step("tapml.checkpoint", step)
    with _open_lock:
        if _open_checkpoint is not None:
            raise RuntimeError(
                f"tapml.checkpoint({step}): checkpoint({_open_checkpoint}) is still open; "
                "finish one checkpoint block before starting the next"
            )
        _open_checkpoint = step
    try:
        ckpt = _checkpoint_dir()
        root = _staging_root(ckpt)
        root.mkdir(parents=True, exist_ok=True)
        # The processes of one node of a sharded job write one shard: one staging directory,
        # published by the node's first process once every process of the node is done.
        if node_shared:
            stage = root / f"stage-{step}-node"
            stage.mkdir(exist_ok=True)
        else:
            stage = root / f"stage-{step}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            stage.mkdir()
        try:
            yield stage
            if node_shared:
                _node_barrier()
            publishing = publishes_checkpoints()
            if publishing:
                _warn_unstorable(stage)
                # A rank of a sharded job publishes even an empty shard: the step commits only
                # once every rank stored its own.
                if not sharded_job() and not any(stage.iterdir()):
                    warnings.warn(f"tapml.checkpoint({step}): the block wrote nothing; nothing published", TapmlWarning, stacklevel=5)
                    publishing = False
            if publishing:
                if not under_tap():
                    _fsync_tree(stage)  # outside tap this is the only copy
                _publish(stage, ckpt, root)
                _published = True
                # The line follows every metric logged before it, in the same write.
                _metrics.flush(extra=json.dumps({"checkpoint": True, "step": step}, separators=(",", ":")))
        finally:
            if stage.exists() and (not node_shared or _local_rank() == 0):
                shutil.rmtree(stage, ignore_errors=True)
        _checkpoint_done()
    finally:
        with _open_lock:
            _open_checkpoint = None


def _checkpoint_done() -> None:
    global _last_checkpoint_at
    _last_checkpoint_at = time.monotonic()


# When this process last finished a checkpoint block (or started): what checkpoint_due()
# measures from. The cadence file's last read: (mtime_ns, size, interval).
_last_checkpoint_at = time.monotonic()
_cadence_seen: Optional[tuple] = None


def _positive(x: Any) -> Optional[float]:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def checkpoint_interval() -> float:
    """Seconds between periodic checkpoints, as tap measured them for this run.

    ``tap run`` works it out from the run's own checkpoint write time δ, its restart cost R
    and the pool's mean time between interruptions M (Young/Daly: T = δ + √(2(M+R)δ + δ²)),
    hands it over in ``TAP_CHECKPOINT_INTERVAL_S`` and refreshes it in ``TAP_CADENCE_FILE``
    after every checkpoint. Before a checkpoint was measured, and outside ``tap run``, it is
    :data:`FIRST_CHECKPOINT_S`.
    """
    global _cadence_seen
    path = _env("TAP_CADENCE_FILE")
    if path:
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size)
            if _cadence_seen is None or _cadence_seen[:2] != key:
                interval = _positive(_read_json(path).get("handed_s"))
                _cadence_seen = (*key, interval)
            if _cadence_seen[2] is not None:
                return _cadence_seen[2]
        except (OSError, ValueError, AttributeError):
            pass
    return _positive(_env("TAP_CHECKPOINT_INTERVAL_S")) or FIRST_CHECKPOINT_S


def checkpoint_due() -> bool:
    """Whether the next periodic checkpoint is due: :func:`checkpoint_interval` seconds have
    passed since this process's last checkpoint block ended (or since it started)::

        if tapml.should_stop() or tapml.checkpoint_due():
            with tapml.checkpoint(step) as d:
                torch.save(state, d / "model.pt")

    It replaces a fixed ``step % checkpoint_every``. In a job of several processes every rank
    must checkpoint at the same step: decide on rank 0 and broadcast the answer (as
    ``tapml.torch.should_stop_all`` does for the notice).
    """
    return time.monotonic() - _last_checkpoint_at >= checkpoint_interval()


def restored() -> Optional[Path]:
    """The restored checkpoint's directory after ``tap run --resume`` found one, else None
    (also once this process published a checkpoint of its own, which replaced it).

    After ``--restore all`` (a sharded job resumed with another world size: every shard in
    ``rank-<r>/``) it is one view of every shard: each file under its own path, links into
    the shards, rank 0's where two shards have the same path (DCP's ``.metadata``, a
    framework's config) — what a framework's sharded load reads to reshard."""
    if _env("TAP_RESTORED_CHECKPOINT") is None or _published:
        return None
    ckpt = _checkpoint_dir()
    if not ckpt.is_dir():
        return None
    return _all_shards_view(ckpt) if _shard_dirs(ckpt) else ckpt


def _shard_dirs(ckpt: Path) -> List[Path]:
    """``rank-<r>/`` of an ``--restore all``, rank 0 first."""
    found = []
    for p in ckpt.iterdir():
        r = p.name[len("rank-"):]
        if p.is_dir() and p.name.startswith("rank-") and r.isdigit():
            found.append((int(r), p))
    return [p for _, p in sorted(found)]


def _all_shards_view(ckpt: Path) -> Path:
    """The one view of every shard :func:`restored` returns (made once per process, beside
    the checkpoint directory)."""
    view = _staging_root(ckpt) / f"all-shards-{os.getpid()}"
    if view.is_dir():
        return view
    part = view.with_name(view.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    for shard in _shard_dirs(ckpt):
        for dirpath, _, filenames in os.walk(shard):
            rel = Path(dirpath).relative_to(shard)
            for name in filenames:
                link = part / rel / name
                if not link.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to((Path(dirpath) / name).resolve())
    part.mkdir(parents=True, exist_ok=True)
    part.rename(view)
    return view


def restored_step() -> Optional[int]:
    """The step of the restored checkpoint (as the checkpoint block gave it), else None."""
    if restored() is None:
        return None
    raw = _env("TAP_RESTORED_STEP")
    if raw is None or not _INT.match(raw):
        return None
    return int(raw)


# --------------------------------------------------------------------------------------
# Interruption notices


class _Notice:
    def __init__(self) -> None:
        self.at: Optional[float] = None  # time.monotonic() of the notice
        self.installed: Optional[Callable[..., Any]] = None
        self.warned = False


_notice = _Notice()


def _signal_number() -> int:
    name = _env("TAP_INTERRUPT_SIGNAL") or DEFAULT_INTERRUPT_SIGNAL
    try:
        return int(getattr(signal, name if name.startswith("SIG") else "SIG" + name))
    except (AttributeError, TypeError):
        raise TapmlError(f"tapml: TAP_INTERRUPT_SIGNAL={name!r} is not a signal this system has") from None


def _install() -> None:
    """Installs (or re-installs, when the script replaced it) the notice handler, chaining
    the handler it replaces."""
    signum = _signal_number()
    current = signal.getsignal(signum)
    if _notice.installed is not None and current is _notice.installed:
        return
    if threading.current_thread() is not threading.main_thread():
        if not _notice.warned and _notice.installed is None:
            _notice.warned = True
            warnings.warn(
                "tapml: should_stop() first called off the main thread, where Python cannot install a signal handler; "
                "import tapml in the main thread",
                TapmlWarning,
                stacklevel=3,
            )
        return
    previous = current if callable(current) else None

    def on_notice(sig: int, frame: Any) -> None:
        if _notice.at is None:
            _notice.at = time.monotonic()
        if previous is not None:
            previous(sig, frame)

    signal.signal(signum, on_notice)
    _notice.installed = on_notice


def _notice_info() -> Optional[dict]:
    path = _env("TAP_NOTICE_INFO")
    if path is None:
        return None
    try:
        info = _read_json(path)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def should_stop() -> bool:
    """True once an interruption notice arrived: checkpoint and exit soon (see :func:`time_left`).

    tap sends ``--interrupt-signal`` (default SIGUSR1); tapml's handler (installed at import
    in the main thread, chaining any handler it replaces, and again here if the script
    replaced it) notes it. Also true when tap wrote the notice file for this run.
    """
    _install()
    if _notice.at is not None:
        return True
    if _notice_info() is not None:
        _notice.at = time.monotonic()
        return True
    return False


def time_left() -> Optional[float]:
    """Seconds until the command must have checkpointed and exited, after a notice; None
    before one (or outside tap, where no deadline is known)."""
    if not should_stop():
        return None
    info = _notice_info()
    if info is not None and isinstance(info.get("deadline_ms"), (int, float)):
        return max(0.0, info["deadline_ms"] / 1000.0 - time.time())
    budget = _env("TAP_CHECKPOINT_DEADLINE_S")
    if budget is None or _notice.at is None:
        return None
    try:
        return max(0.0, float(budget) - (time.monotonic() - _notice.at))
    except ValueError:
        return None


# A notice that arrives before the script's first should_stop() must not kill it (SIGUSR1's
# default action): install at import, in the main thread.
if threading.current_thread() is threading.main_thread():
    try:
        _install()
    except (TapmlError, ValueError, OSError):
        pass
