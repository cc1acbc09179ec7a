"""What keeps a long run safe: the checkpoint marker, preemption, and the non-finite loss stop.

All ranks must stop at the same step, or the ones still training hang in their next collective.
So each step, `RunGuard` all-reduces two flags (a signal arrived here; this rank's loss was not
finite) and every rank acts on the maximum.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ossft.checkpoints.layout import checkpoint_name
from ossft.errors import UserError
from ossft.launch.ranks import PREEMPTED_EXIT  # 75, what the launching process exits with
from ossft.train.resume import write_marker

# torchrun forwards the signal it receives to every worker, and a terminal sends Ctrl-C to the whole
# process group: one user action reaches a rank two or three times within milliseconds. Only a signal
# this long after the first means "stop now".
REPEAT_WINDOW_S = 2.0


class Preempted(UserError):
    """Training stopped on SIGTERM / SIGINT after writing a checkpoint. Not a mistake, but it travels
    the same way: one line on every rank, and an exit code the launching process passes on."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(
            f"preempted: stopped at step {step} after writing {checkpoint}. Run the same command to resume.",
            exit_code=PREEMPTED_EXIT,
        )
        self.step = step


class NonFiniteLoss(UserError):
    def __init__(self, step: int, streak: int, last_good: str | None):
        kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was saved before it"
        super().__init__(
            f"training stopped: the loss was not finite (NaN or inf) for {streak} steps in a row, the last at step "
            f"{step}; {kept}. Lower train.learning_rate or set train.max_grad_norm, check the data with "
            "`ossft inspect-data`, then resume (or set guards.max_nonfinite_losses)."
        )
        self.step = step


class CheckpointMarker(TrainerCallback):
    """Writes resume.MARKER into each checkpoint once every rank has finished writing its part."""

    def __init__(self, identity: dict):
        self.identity = identity

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # FSDP and ZeRO write one file per rank
        if state.is_world_process_zero:
            write_marker(_checkpoint_dir(args, state), state.global_step, self.identity)


class RunGuard(TrainerCallback):
    """Stops on a signal (checkpoint first) or after `max_nonfinite` non-finite steps (no checkpoint)."""

    def __init__(self, max_nonfinite: int):
        self.max_nonfinite = max_nonfinite
        self.accelerator = None  # set once the trainer exists
        self.signal_at: float | None = None
        self.signal_name = ""
        self.step_nonfinite = None  # device bool: a non-finite loss on this rank since the last step
        self.streak = 0
        self.preempted_at: int | None = None
        self.nonfinite_stop: int | None = None
        self._previous = {}

    # --- signals -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum, frame):
        now = time.monotonic()
        if self.signal_at is not None and now - self.signal_at > REPEAT_WINDOW_S:
            sys.stderr.write(f"\nossft: second {signal.Signals(signum).name}: stopping now, without a checkpoint\n")
            os._exit(128 + signum)
        if self.signal_at is None:
            self.signal_at, self.signal_name = now, signal.Signals(signum).name
            sys.stderr.write(
                f"\nossft: {self.signal_name} received: finishing this step, writing a checkpoint, then exiting "
                f"with code {PREEMPTED_EXIT} (signal again to stop at once)\n"
            )

    # --- losses --------------------------------------------------------------------------------
    def saw_loss(self, loss) -> None:
        """Called with each micro-batch's loss (MeteredSFTTrainer.training_step). Stays on the device:
        reading it here would stall the GPU once per micro-batch; on_step_end reads it once a step."""
        bad = ~torch.isfinite(loss.detach()).all()
        self.step_nonfinite = bad if self.step_nonfinite is None else self.step_nonfinite | bad

    # --- every step ----------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        nonfinite_here = bool(self.step_nonfinite) if self.step_nonfinite is not None else False
        flags = torch.tensor([self.signal_at is not None, nonfinite_here], dtype=torch.int32)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags.to(self.accelerator.device), reduction="max").cpu()
        stop_signal, nonfinite = (bool(x) for x in flags.tolist())
        self.step_nonfinite = None
        self.streak = self.streak + 1 if nonfinite else 0
        if self.streak:
            control.should_save = False  # never checkpoint weights a non-finite step may have broken
        if self.streak >= self.max_nonfinite:
            self.nonfinite_stop = state.global_step
            control.should_training_stop = True
        elif stop_signal:
            self.preempted_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def outcome(self, args, state) -> None:
        """After train(): raise what stopped the run, if anything did."""
        if self.nonfinite_stop is not None:
            from ossft.train.resume import checkpoints_in

            good = [c for c in checkpoints_in(Path(args.output_dir)) if c.complete]
            raise NonFiniteLoss(self.nonfinite_stop, self.streak, str(good[0].path) if good else None)
        if self.preempted_at is not None:
            raise Preempted(self.preempted_at, str(_checkpoint_dir(args, state)))


def _checkpoint_dir(args, state) -> Path:
    return Path(args.output_dir) / checkpoint_name(state.global_step)
