"""tapml: the training script's side of ``tap run``.

Three lines make a script spot-safe and tracked::

    import tapml

    hp = tapml.hparams({"lr": 0.05, "steps": 400})      # tap params, numbers as numbers
    for step in range((tapml.restored_step() or 0) + 1, hp["steps"] + 1):
        loss = train_step()
        tapml.log(step, loss=loss)                       # metrics, buffered
        stop = tapml.should_stop()                       # the spot notice arrived?
        if stop or step % 100 == 0:
            with tapml.checkpoint(step) as d:            # staged, published atomically
                torch.save(state, d / "model.pt")
        if stop:
            break

Resume with ``tap run --resume``: :func:`restored` is the restored checkpoint's directory and
:func:`restored_step` its step. Outside ``tap run`` every call works locally: metrics go to
stderr, checkpoints to ``./checkpoints``, :func:`hparams` returns the defaults.

``tap run`` puts this package on the command's ``PYTHONPATH`` (the copy embedded in the tap
binary, so it always matches it); elsewhere ``pip install ./python``. ``tapml.torch`` adds
:func:`tapml.torch.should_stop_all` for ``torch.distributed`` jobs, and
``tapml.integrations.transformers`` / ``tapml.integrations.lightning`` a ``TapCallback`` each.
"""

from ._core import (
    TapmlError,
    TapmlWarning,
    checkpoint,
    checkpoint_due,
    checkpoint_interval,
    flush,
    hparams,
    log,
    name_problem,
    publishes_checkpoints,
    rank,
    restored,
    restored_step,
    sharded_job,
    should_stop,
    time_left,
    under_tap,
)

__version__ = "0.1.0"

__all__ = [
    "TapmlError",
    "TapmlWarning",
    "__version__",
    "checkpoint",
    "checkpoint_due",
    "checkpoint_interval",
    "flush",
    "hparams",
    "log",
    "name_problem",
    "publishes_checkpoints",
    "rank",
    "restored",
    "restored_step",
    "sharded_job",
    "should_stop",
    "time_left",
    "under_tap",
]
