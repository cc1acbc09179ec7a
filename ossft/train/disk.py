"""Will the run's checkpoints and final save fit on the output disk? Asked before the first step.

A 120b full fine-tune's checkpoint is ~1.4 TB, fp32 weights and moments (docs/traps.md#trap-8): a disk that fills at hour six
loses the save being written and, with it, the run. The estimate counts what the Trainer writes, in
the dtypes the prepared run holds (the same rules as `ossft plan`, launch/memory.py): the weights
(trainable ones for LoRA, all for full fine-tuning), fp32 for the trainable ones that FSDP2 mixed
precision upcasts; the optimizer states `train.optim` keeps (DeepSpeed: fp32 master weights and
moments, 12 bytes); and a fixed allowance for the scheduler, RNG states, tokenizer and card; times the
checkpoints kept, plus the final save. It runs before the Trainer prepares the model, so it reads
the dtypes the model has now and applies those rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.disk_space import free_bytes
from ossft.errors import UserError
from ossft.launch.memory import Layout, frozen_bytes, optimizer_state_bytes, trained_bytes
from ossft.units import GIB

SMALL_FILES = 16 * 2**20  # scheduler, rng states, trainer_state, tokenizer, README: a few MB at most


@dataclass(frozen=True)
class DiskNeeds:
    checkpoint_bytes: int
    checkpoints_kept: int
    final_bytes: int

    @property
    def total(self) -> int:
        return self.checkpoint_bytes * self.checkpoints_kept + self.final_bytes


def disk_needs(trainer, total_steps: int) -> DiskNeeds:
    from peft import PeftModel

    from ossft.model.load import parameter_size

    model = trainer.model
    lora = isinstance(model, PeftModel)
    layout = Layout(
        trainer.accelerator.num_processes,
        sharded=trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled,
        offload_params=False,
        offload_optimizer=False,
        deepspeed=trainer.is_deepspeed_enabled,
    )
    mixed = bool(trainer.args.bf16 or trainer.args.fp16)
    optim = str(getattr(trainer.args.optim, "value", trainer.args.optim))
    weights = optimizer = 0.0
    for p in model.parameters():
        count = parameter_size(p)
        if p.requires_grad:
            held = trained_bytes(p.element_size(), lora, layout, mixed)
            weights += count * held
            optimizer += count * optimizer_state_bytes(optim, held, layout.deepspeed)
        elif not lora:
            weights += count * frozen_bytes(p.element_size(), layout, mixed)
    weights, optimizer = math.ceil(weights), math.ceil(optimizer)
    kept = checkpoints_kept(trainer.args, total_steps)
    return DiskNeeds(weights + optimizer + SMALL_FILES, kept, weights + SMALL_FILES)


def checkpoints_kept(args, total_steps: int) -> int:
    """How many checkpoints can be on disk at once: save_total_limit, or every save of the run."""
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    if strategy == "no":
        return 0
    if strategy == "epoch":
        saves = math.ceil(args.num_train_epochs) if args.max_steps <= 0 else 1
    elif strategy == "best":
        saves = 1
    else:
        interval = args.save_steps if args.save_steps >= 1 else max(1, math.ceil(args.save_steps * total_steps))
        saves = max(1, math.ceil(total_steps / int(interval)))
    if args.save_total_limit:
        # The Trainer deletes old checkpoints only after writing the next: one more is on disk for a while.
        return min(saves, args.save_total_limit + 1)
    return saves


def check_disk(plan: DiskNeeds, output: Path) -> None:
    free = free_bytes(output)
    if free >= plan.total:
        return
    raise UserError(
        f"not enough disk space for {output}: this run writes up to {plan.total / GIB:,.2f} GiB "
        f"({plan.checkpoints_kept} checkpoint(s) of {plan.checkpoint_bytes / GIB:,.2f} GiB, weights and optimizer "
        f"state, plus the final save of {plan.final_bytes / GIB:,.2f} GiB) and {free / GIB:,.2f} GiB are free. "
        "Free some space, lower train.save_total_limit, choose another output.dir, or pass --skip-disk-check."
    )
