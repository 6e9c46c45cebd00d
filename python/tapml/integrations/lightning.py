"""A Lightning ``Trainer`` callback for ``tap run`` (``lightning.pytorch``, or
``pytorch_lightning`` where only that is installed).

::

    from tapml.integrations.lightning import TapCallback, ckpt_path

    trainer = L.Trainer(max_steps=1000, callbacks=[TapCallback(every_n_train_steps=200)])
    trainer.fit(model, data, ckpt_path=ckpt_path())

It records the metrics the module logs with ``self.log`` (every ``log_every_n_steps``),
publishes a checkpoint every ``every_n_train_steps`` and at the end of training, and on an
interruption notice (agreed across ranks) saves one more and stops the Trainer cleanly.
:func:`ckpt_path` is the restored checkpoint for ``fit(ckpt_path=...)``: weights,
optimizer, loops and step.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    from pytorch_lightning import Callback  # type: ignore[no-redef]

from .. import _core

__all__ = ["TapCallback", "ckpt_path", "CKPT_NAME"]

#: The file name of the Lightning checkpoint inside a tapml checkpoint.
CKPT_NAME = "last.ckpt"


def ckpt_path() -> Optional[str]:
    """The restored Lightning checkpoint (``tap run --resume``) for ``fit(ckpt_path=...)``,
    or None. A sharded save (FSDP's ``state_dict_type="sharded"``, DeepSpeed: a directory)
    reads parts every rank wrote: resume it with ``--restore all``, which gives every rank
    every shard (and :func:`tapml.restored` their one view)."""
    d = _core.restored()
    if d is None or not (d / CKPT_NAME).exists():
        return None
    ckpt = d / CKPT_NAME
    if ckpt.is_dir() and _core.sharded_job() and not _core._shard_dirs(_core._checkpoint_dir()):
        raise _core.TapmlError(
            f"tapml: {ckpt} is a sharded Lightning checkpoint, which every rank loads from every rank's part: "
            "resume every rank with tap run --resume GROUP --restore all"
        )
    return str(ckpt)


class TapCallback(Callback):  # type: ignore[misc]
    """Metrics, checkpoints and spot notices of a Lightning ``Trainer`` under ``tap run``."""

    def __init__(self, every_n_train_steps: Optional[int] = None, save_on_train_end: bool = True) -> None:
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool) or every_n_train_steps <= 0):
            raise ValueError(f"TapCallback: every_n_train_steps must be a positive int or None, got {every_n_train_steps!r}")
        self.every_n_train_steps = every_n_train_steps
        self.save_on_train_end = save_on_train_end
        self._saved_step: Optional[int] = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        step = _core.restored_step()
        if step is not None and trainer.ckpt_path is None and trainer.is_global_zero:
            warnings.warn(
                f"tapml: tap restored a checkpoint (step {step}) but fit() starts fresh: "
                "pass trainer.fit(..., ckpt_path=tapml.integrations.lightning.ckpt_path())",
                _core.TapmlWarning,
                stacklevel=2,
            )

    def _save(self, trainer: Any) -> None:
        step = trainer.global_step
        if self._saved_step == step:
            return
        # Every rank calls save_checkpoint (a collective for some strategies); rank 0 writes
        # and publishes.
        with _core.checkpoint(step) as d:
            trainer.save_checkpoint(str(d / CKPT_NAME))
        self._saved_step = step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if trainer.is_global_zero and step % max(1, trainer.log_every_n_steps) == 0:
            numbers = {}
            for k, v in trainer.callback_metrics.items():
                try:
                    numbers[k] = float(v)
                except (TypeError, ValueError):
                    continue
            if numbers:
                _core.log(step=step, **numbers)
        stop = trainer.strategy.reduce_boolean_decision(_core.should_stop(), all=False)
        if stop:
            self._save(trainer)
            trainer.should_stop = True
        elif self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.save_on_train_end:
            self._save(trainer)
        _core.flush()
