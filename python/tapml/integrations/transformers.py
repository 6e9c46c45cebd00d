"""A Hugging Face ``Trainer`` callback for ``tap run``.

::

    from tapml.integrations.transformers import TapCallback

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[TapCallback()])
    trainer.train(resume_from_checkpoint=tapml.restored())

It records the Trainer's logs as tap metrics (at the Trainer's own ``logging_steps``),
publishes every checkpoint the Trainer saves, and on an interruption notice (agreed across
ranks) makes the Trainer save one more and stop cleanly. ``tapml.restored()`` is then a
checkpoint directory the Trainer resumes from: weights, optimizer, scheduler, RNG and step.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .. import _core
from ._publish import publish_tree

__all__ = ["TapCallback"]


def _agreed_stop() -> bool:
    try:
        from ..torch import should_stop_all  # the local answer without a process group
    except ImportError:
        return _core.should_stop()
    return should_stop_all()


class TapCallback(TrainerCallback):  # type: ignore[misc]
    """Metrics, checkpoints and spot notices of a ``Trainer`` under ``tap run``.

    ``publish_saves``: publish every checkpoint the Trainer saves (its ``save_steps``), not
    only the one saved on a notice. The notice check is one all-reduce per step in a
    distributed job.
    """

    def __init__(self, publish_saves: bool = True) -> None:
        self.publish_saves = publish_saves
        self._stopping = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = _core.restored_step()
        if step is not None and state.global_step == 0 and state.is_world_process_zero:
            warnings.warn(
                f"tapml: tap restored a checkpoint (step {step}) but the Trainer starts at step 0: "
                "pass trainer.train(resume_from_checkpoint=tapml.restored())",
                _core.TapmlWarning,
                stacklevel=2,
            )

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            _core.log(step=state.global_step, **numbers)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not self._stopping and _agreed_stop():
            self._stopping = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # In a sharded job each node's first process publishes its node's shard.
        publisher = state.is_local_process_zero if _core.sharded_job() else state.is_world_process_zero
        if not publisher or not (self.publish_saves or self._stopping):
            return
        saved = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not saved.is_dir():
            warnings.warn(f"tapml: the Trainer's checkpoint {saved} is not there; not published", _core.TapmlWarning, stacklevel=2)
            return
        publish_tree(saved, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _core.flush()
