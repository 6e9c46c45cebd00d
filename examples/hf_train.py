#!/usr/bin/env python3
"""A Hugging Face Trainer job under `tap run`, with tapml's TapCallback: a tiny GPT-2 (built
here, nothing downloaded) learns to continue counting sequences on the CPU (or a GPU).

    tap params set max_steps 200
    tap run -e hf -- python3 examples/hf_train.py
    tap run -e hf --resume -- python3 examples/hf_train.py   # after a spot notice

TapCallback records the Trainer's logs as tap metrics, publishes every checkpoint the
Trainer saves, and on a notice makes it save once more and stop. On resume the Trainer
continues from tapml.restored(): weights, optimizer, scheduler, RNG and step.
"""
import os
import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

try:
    import tapml
except ImportError:  # outside tap run, without `pip install ./python`: this checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import tapml
from tapml.integrations.transformers import TapCallback

hp = tapml.hparams({"max_steps": 200, "learning_rate": 3e-3, "batch_size": 16, "logging_steps": 10, "save_steps": 50})
VOCAB, LENGTH = 32, 16


class Counting(torch.utils.data.Dataset):
    """Sequences s, s+1, s+2, ... (mod VOCAB): the next token is always the previous + 1."""

    def __len__(self):
        return 4096

    def __getitem__(self, i):
        ids = (torch.arange(LENGTH) + i) % VOCAB
        return {"input_ids": ids, "labels": ids}


torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2))
args = TrainingArguments(
    output_dir=os.environ.get("HF_OUTPUT_DIR", "hf-output"),
    max_steps=int(hp["max_steps"]),
    learning_rate=float(hp["learning_rate"]),
    per_device_train_batch_size=int(hp["batch_size"]),
    logging_steps=int(hp["logging_steps"]),
    save_steps=int(hp["save_steps"]),
    save_total_limit=1,
    report_to=[],
    dataloader_num_workers=0,
    disable_tqdm=True,
)
trainer = Trainer(model=model, args=args, train_dataset=Counting(), callbacks=[TapCallback()])
if tapml.restored():
    print(f"resuming from the checkpoint of step {tapml.restored_step()}", flush=True)
trainer.train(resume_from_checkpoint=tapml.restored())
if tapml.should_stop():
    print(f"interruption notice: checkpointed at step {trainer.state.global_step}, exiting", flush=True)
else:
    print(f"done at step {trainer.state.global_step}", flush=True)
