"""The launched ranks: running them, what each reports back, and what the launching `ossft train` exits with.

torchrun turns every child failure into exit code 1, so each rank leaves a report in a folder the
launching process names (OSSFT_RANK_FAILURES): its exit code when it stops on an error, or that it
finished. `run_launch` starts the launcher, passes signals on, and reads the reports into a
`LaunchOutcome`, which says what the launching process prints and exits with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ossft.errors import UserError
from ossft.launch.topology import inside_launcher

# sysexits.h EX_TEMPFAIL, "temporary failure, the user is invited to retry": what a launcher's retry
# loop (SkyPilot managed jobs, Slurm --requeue, a shell `until`) can read as "preempted, resume me".
PREEMPTED_EXIT = 75
USER_ERROR_EXIT = 2  # UserError's exit code: bad data, no disk, ...
FAILURES_ENV = "OSSFT_RANK_FAILURES"  # a folder where each rank leaves its exit code, or that it finished
FINISHED = "finished"


@dataclass(frozen=True)
class LaunchOutcome:
    code: int  # what the launching `ossft train` exits with
    crashed_after_finishing: bool = False  # every rank finished, then one died at interpreter exit

    @property
    def failed(self) -> bool:
        """A rank stopped on an error (each printed its own); a preempted run has not failed."""
        return self.code not in (0, PREEMPTED_EXIT)

    @property
    def message(self) -> str | None:
        """What the launching process says about the run, once the ranks are gone."""
        if self.failed:
            return "training stopped: the error of each failing rank is printed above."
        if self.code == PREEMPTED_EXIT:
            return f"preempted: every rank wrote its checkpoint; run the same command to resume (exit {self.code})"
        if self.crashed_after_finishing:
            return (
                "note: a rank crashed at interpreter exit after every rank had finished and the model was "
                "saved and verified (a gloo shutdown bug, pytorch/pytorch#190489): the run is complete."
            )
        return None


def run_launch(plan) -> LaunchOutcome:
    """Run the launcher of a `command.LaunchPlan` and decide the exit code: 2 when any rank stopped on
    a user error (bad data, no disk, ...), 75 when preempted, else the launcher's own code. A rank that
    finished (its model saved, verified and reported) but then died at interpreter exit does not fail
    the run: with gloo a rank can abort in the process group's threads while Python shuts down
    (pytorch/pytorch#190489), after its work is done."""
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ossft-ranks-") as folder:
        env = {**os.environ, **plan.env, FAILURES_ENV: folder}
        launcher = subprocess.Popen(plan.command, env=env)
        # A scheduler often signals only the process it started: pass SIGTERM / SIGINT on to the
        # launcher (torchrun hands it to every rank), then keep waiting for the ranks' checkpoint.
        forward = {
            sig: signal.signal(sig, lambda signum, _: launcher.send_signal(signum))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            code = launcher.wait()
        finally:
            for sig, handler in forward.items():
                signal.signal(sig, handler)
        reports = [p.read_text() for p in Path(folder).glob("rank-*")]
    return outcome_of(code, reports, plan.topology.processes_per_node)


def outcome_of(code: int, reports: list[str], ranks_here: int) -> LaunchOutcome:
    """The launcher's exit `code` and the reports of this node's ranks -> what `ossft train` exits with."""
    if code == 0:
        return LaunchOutcome(0)
    finished = sum(report == FINISHED for report in reports)
    reported = sorted(int(report or 1) for report in reports if report != FINISHED)
    if not reported and finished == ranks_here:  # every rank of this node
        return LaunchOutcome(0, crashed_after_finishing=True)
    # A user error on any rank explains the rest (they stopped because it did); else what a rank said
    # (75: preempted), else the launcher's own code.
    return LaunchOutcome(USER_ERROR_EXIT if USER_ERROR_EXIT in reported else (reported[0] if reported else code))


def report_rank_failure(exit_code: int, env: dict[str, str] | None = None) -> None:
    """Called by a rank that stops on an error, so the launching `ossft train` can exit the same way."""
    _report(str(exit_code), env)


def report_rank_finished(env: dict[str, str] | None = None) -> None:
    """Called by a rank once its share of the run is done and its outputs are written."""
    _report(FINISHED, env)


def _report(text: str, env: dict[str, str] | None) -> None:
    env = os.environ if env is None else env
    folder = env.get(FAILURES_ENV)
    if folder and Path(folder).is_dir():
        (Path(folder) / f"rank-{env.get('RANK', '0')}").write_text(text)


def rank_label(env: dict[str, str] | None = None) -> str:
    """'rank 1 of 2: ' inside a multi-process run, else ''. Every rank prints its own errors."""
    env = os.environ if env is None else env
    if not inside_launcher(env) or env.get("WORLD_SIZE") == "1":
        return ""
    return f"rank {env['RANK']} of {env['WORLD_SIZE']}: "


def leave_process_group(trainer) -> None:
    """Every rank waits for rank 0's report, then the process group is taken down on purpose. A rank
    that exits with the group still up can abort in gloo's threads at interpreter shutdown ("terminate
    called without an active exception", SIGABRT: pytorch/pytorch#190489; seen once in CI on a
    2-process run), which torchrun reports as a failed run although the model was saved. Only on
    success: taking the group down while another rank is stuck in a collective would hang."""
    if trainer.accelerator.num_processes > 1:
        trainer.accelerator.wait_for_everyone()
        trainer.accelerator.end_training()


def refuse_lone_rank(accelerator, env: dict[str, str] | None = None) -> None:
    """Stop a process that was launched as one of several but trains alone (`accelerator`: the
    Trainer's, already built, before anything is written).

    accelerate turns an FSDP config into its FSDP mode only on GPUs (AcceleratorState.__init__ switches
    to FSDP from the GPU-like types alone; docs/traps.md#trap-6): under `accelerate launch --config_file
    fsdp2.yaml` on a machine without one, every process finds itself alone (DistributedType.NO) and
    would train the whole run on its own, all of them into the same output folder, and exit 0.
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:
        raise UserError(
            f"this process was launched as one of {world} (WORLD_SIZE={world}), but accelerate runs it alone "
            f"({accelerator.distributed_type.value}): each of the {world} processes would train the whole run "
            "by itself into the same output folder. accelerate gives FSDP configs their FSDP mode only on "
            "GPUs. Run `ossft train RECIPE` instead (it launches the processes itself, and on CPUs runs FSDP2 over "
            "gloo), or "
            "launch with --config_file accelerate_configs/ddp.yaml."
        )
