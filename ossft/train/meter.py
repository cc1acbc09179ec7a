"""Hooks into the training loop: exact token counts, step times, peak memory, and loss.png at every save.

Token counts come from the batches themselves, not from TRL's `num_tokens` metric: that one counts
only input tokens (attention_mask), is logged only at logging steps, and says nothing of the tokens
the loss trains. `MeteredSFTTrainer.training_step` sees every micro-batch that a step really
processes, so the counts are exact; counting in the collator would also count batches the
dataloader fetched ahead and never trained.
"""

from __future__ import annotations

import resource
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from ossft.checkpoints.layout import PLOT_FILE
from ossft.data.tokenize import IGNORE
from ossft.train import plots


def warmup_steps_left_out(max_steps: int) -> int:
    """Steps left out of the steady-state speed: the first ones pay for kernel selection and allocator
    growth. Five, or half of a short run, so that a 6-step run still measures steps 4-6."""
    return min(5, max(max_steps, 0) // 2)


@dataclass
class Measurements:
    tokens_seen: int  # non-padding input tokens of every trained micro-batch, all processes
    tokens_trained: int  # labels != -100 among them: the tokens the loss was computed on
    steady_tokens_seen: int
    steady_seconds: float  # forward, backward and optimizer time of the steady steps only
    steady_steps: list[int] | None  # [first, last] step of the steady window
    peak_cpu_rss_bytes: int
    peak_gpu: list[dict] = field(default_factory=list)


class RunMeter(TrainerCallback):
    """Counts tokens per micro-batch (fed by MeteredSFTTrainer) and times each optimizer step."""

    def __init__(self):
        self.seen = 0  # device tensors once the first batch arrives: no host sync per batch
        self.trained = 0
        self.step_seen = 0
        self.steady_seen = 0
        self.steady_seconds = 0.0
        self.skip = 0
        self.steady_first: int | None = None
        self.steady_last: int | None = None
        self._step_started: float | None = None

    def count_batch(self, inputs: dict) -> None:
        mask = inputs.get("attention_mask")
        seen = mask.sum() if mask is not None else inputs["input_ids"].numel()
        self.seen = self.seen + seen
        self.step_seen = self.step_seen + seen
        self.trained = self.trained + (inputs["labels"] != IGNORE).sum()

    def on_train_begin(self, args, state, control, **kwargs):
        self.skip = warmup_steps_left_out(state.max_steps)

    def on_step_begin(self, args, state, control, **kwargs):
        _synchronize()
        self.step_seen = 0
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()  # GPU work is asynchronous: without this the clock stops before the step does
        if self._step_started is None or state.global_step <= self.skip:
            return
        self.steady_seconds += time.perf_counter() - self._step_started
        self.steady_seen = self.steady_seen + self.step_seen
        self.steady_first = self.steady_first or state.global_step
        self.steady_last = state.global_step

    def measure(self, trainer) -> Measurements:
        """Totals over every process. A collective: every rank must call it."""
        accelerator = trainer.accelerator
        counts = torch.tensor([int(self.seen), int(self.trained), int(self.steady_seen)], device=accelerator.device)
        if accelerator.num_processes > 1:
            counts = accelerator.reduce(counts, reduction="sum")
        seen, trained, steady = (int(x) for x in counts.tolist())
        window = [self.steady_first, self.steady_last] if self.steady_first is not None else None
        return Measurements(seen, trained, steady, self.steady_seconds, window, peak_rss_bytes(), peak_gpu(trainer))


class MeteredSFTTrainer(SFTTrainer):
    """SFTTrainer that shows every micro-batch it trains on to a RunMeter (`self.meter`)."""

    def __init__(self, *args, guard=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.meter = RunMeter()
        self.add_callback(self.meter)
        self.guard = guard  # guards.RunGuard: sees every micro-batch's loss
        self.saved_state_dict = None
        if guard is not None:
            guard.accelerator = self.accelerator
            self.add_callback(guard)

    def _save(self, output_dir=None, state_dict=None):
        # Keep the weights the Trainer gathered for this save (under ZeRO-3, the only whole copy) so
        # the save can be verified against them without gathering a 120b model a second time.
        self.saved_state_dict = state_dict
        return super()._save(output_dir, state_dict=state_dict)

    def training_step(self, model, inputs, *args, **kwargs):
        self.meter.count_batch(inputs)
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.guard is not None:
            self.guard.saw_loss(loss)
        return loss


class LossPlotCallback(TrainerCallback):
    """Redraws loss.png in the output folder after every checkpoint, so a long run can be watched."""

    def __init__(self):
        self.written_at: list[int] = []  # steps at which loss.png was drawn

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        try:
            plots.write_loss_plot(state.log_history, args.output_dir)
        except Exception as exc:  # a plot is never worth losing hours of training over
            warnings.warn(f"could not draw {PLOT_FILE} at step {state.global_step}: {exc}", stacklevel=1)
            return
        self.written_at.append(state.global_step)


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. ru_maxrss is in KiB on Linux, in bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_gpu(trainer) -> list[dict]:
    """Max allocated and reserved memory of each GPU holding the model, from every process."""
    if not torch.cuda.is_available():
        return []
    # Only the devices this process uses: asking about the others would create a CUDA context on each.
    devices = {p.device.index for p in trainer.model.parameters() if p.device.type == "cuda"}
    if trainer.accelerator.device.type == "cuda":
        devices.add(trainer.accelerator.device.index or 0)
    local = [
        {
            "device": index,
            "name": torch.cuda.get_device_name(index),
            "max_allocated_bytes": torch.cuda.max_memory_allocated(index),
            "max_reserved_bytes": torch.cuda.max_memory_reserved(index),
            "process": trainer.accelerator.process_index,
        }
        for index in sorted(devices)
    ]
    if trainer.accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        local = gather_object(local)
    return local
