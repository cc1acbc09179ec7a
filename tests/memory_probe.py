"""Run in each rank by tests/test_memory_accounting.py, under the `accelerate launch` command `ossft train`
would use: build the trainer as `ossft train` does (ossft.train.run.prepare_trainer), train, and right after
the first optimizer step (before the Trainer zeroes the gradients) write the bytes this rank holds:
- weights: every parameter's local storage: a DTensor's local shard (FSDP2), DeepSpeed's partition
  (`ds_tensor`; the parameter itself is an empty placeholder between uses), else the tensor;
- gradients: the same for `.grad`; DeepSpeed keeps them in one flat buffer of partitions
  (`grad_partitions_flat_buffer`, deepspeed/runtime/zero/stage3.py); its reduce buckets, a fixed
  few MB whatever the model, are left out;
- optimizer states: every tensor in the optimizer's state; DeepSpeed's fp32 master partitions
  (`fp32_partitioned_groups_flat`) with its inner optimizer's moments.
Each storage is counted once. Also what `ossft train`'s disk check (ossft/train/disk.py) expects one
checkpoint's weights and optimizer states to take, asked where `ossft train` asks it: before the Trainer
prepares the model. Usage: python -m tests.memory_probe RECIPE OUT_DIR (OUT_DIR/rank-N.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _local(tensor):
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for tensor in tensors:
        tensor = _local(tensor)
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.numel())
        if tensor.numel() == 0 or key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def _state_tensors(optimizer):
    import torch

    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def held_bytes(trainer) -> dict[str, int]:
    model = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
    parameters = list(model.parameters())
    if trainer.is_deepspeed_enabled:
        zero = trainer.model_wrapped.optimizer  # DeepSpeedZeroOptimizer_Stage3
        return {
            "weights": _bytes(p.ds_tensor for p in parameters),
            "gradients": _bytes([zero.grad_partitions_flat_buffer]),
            "optimizer states": _bytes([*zero.fp32_partitioned_groups_flat, *_state_tensors(zero.optimizer)]),
        }
    return {
        "weights": _bytes(parameters),
        "gradients": _bytes(p.grad for p in parameters if p.grad is not None),
        "optimizer states": _bytes(_state_tensors(trainer.optimizer)),
    }


def main(recipe_path: str, out_dir: str) -> None:
    from transformers import TrainerCallback

    from ossft.recipe.load import load_recipe
    from ossft.train.disk import SMALL_FILES, disk_needs
    from ossft.train.run import distribution, prepare_trainer

    trainer = prepare_trainer(load_recipe(recipe_path), on_status=lambda *_: None)[0]
    checkpoint = disk_needs(trainer, total_steps=1).checkpoint_bytes - SMALL_FILES

    class AfterTheFirstStep(TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            if state.global_step == 0:  # the Trainer counts the step after this callback
                rank = trainer.accelerator.process_index
                report = {"distributed": distribution(trainer), "checkpoint": checkpoint, **held_bytes(trainer)}
                (Path(out_dir) / f"rank-{rank}.json").write_text(json.dumps(report))

    trainer.add_callback(AfterTheFirstStep())
    trainer.train()


if __name__ == "__main__":
    main(*sys.argv[1:3])
