"""Resume after a crash or a preemption: same weights, bit for bit, as a run that never stopped."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ossft.recipe.load import load_recipe
from ossft.train.guards import PREEMPTED_EXIT
from ossft.train.resume import MARKER
from tests.conftest import REPO

STEPS = 12
SAVE_EVERY = 3


def train_command(tiny_model_dir: Path, out: Path, *extra: str) -> list[str]:
    sets = [
        f"model.base_model={tiny_model_dir}",
        f"output.dir={out}",
        f"train.max_steps={STEPS}",
        f"train.save_steps={SAVE_EVERY}",
        "train.save_total_limit=null",
        "train.logging_steps=1",
        *extra,
    ]
    command = [sys.executable, "-m", "ossft", "train", str(REPO / "recipes" / "quickstart.yaml")]
    return command + [a for s in sets for a in ("--set", s)]


def start(command: list[str], *flags: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "COLUMNS": "200"}
    return subprocess.Popen(
        [*command, *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def run(command: list[str], *flags: str) -> tuple[int, str]:
    process = start(command, *flags)
    output, _ = process.communicate(timeout=600)
    return process.returncode, " ".join(output.split())


def wait_for(condition, process: subprocess.Popen, timeout: float = 300, poll: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended before the moment to stop it: {process.communicate()[0][-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for training")
        time.sleep(poll)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter_model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = weights(a), weights(b)
    assert left.keys() == right.keys()
    different = [name for name in left if not torch.equal(left[name], right[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    code, log = run(train_command(tiny_model_dir, out))
    assert code == 0, log[-3000:]
    return out


@pytest.mark.e2e
def test_same_recipe_same_weights(uninterrupted, tiny_model_dir, tmp_path):
    # The premise of every resume test below: a run is bitwise repeatable.
    code, log = run(train_command(tiny_model_dir, tmp_path / "again"))
    assert code == 0, log[-3000:]
    assert_same_weights(uninterrupted, tmp_path / "again")


@pytest.mark.e2e
def test_sigkill_between_checkpoints_then_resume(uninterrupted, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = train_command(tiny_model_dir, out)
    process = start(command)
    wait_for(lambda: (out / "checkpoint-3" / MARKER).is_file(), process)
    time.sleep(0.3)  # somewhere in steps 4-6
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "adapter_model.safetensors").exists()  # it really died before the end
    code, log = run(command)
    assert code == 0, log[-3000:]
    assert f"resuming from {out}/checkpoint-" in log
    assert_same_weights(uninterrupted, out)


@pytest.mark.e2e
def test_sigkill_while_a_checkpoint_is_written_then_resume(uninterrupted, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = train_command(tiny_model_dir, out)
    for _ in range(3):  # the save of a tiny model is quick: try until one is caught half-written
        shutil.rmtree(out, ignore_errors=True)
        process = start(command)
        caught: list[int] = []
        wait_for(lambda found=caught: half_written(out, found), process, poll=0.0002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not (out / f"checkpoint-{caught[0]}" / MARKER).exists():
            break
    else:
        pytest.fail("never caught a checkpoint half-written in 3 runs")
    step = caught[0]
    code, log = run(command)
    assert code == 0, log[-3000:]
    assert f"skipped checkpoint-{step}: " in log and f"moved to partial-checkpoint-{step}" in log
    assert f"resuming from {out}/checkpoint-{step - SAVE_EVERY} (step {step - SAVE_EVERY})" in log
    assert (out / f"partial-checkpoint-{step}").is_dir()  # kept aside, never loaded
    assert_same_weights(uninterrupted, out)


def half_written(out: Path, found: list[int]) -> bool:
    """True once a checkpoint folder exists whose marker is not written yet; its step goes in `found`."""
    for step in (6, 9):
        folder = out / f"checkpoint-{step}"
        if folder.is_dir() and not (folder / MARKER).exists():
            found.append(step)
            return True
    return False


@pytest.mark.e2e
def test_sigterm_checkpoints_then_exits_as_preempted(uninterrupted, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = train_command(tiny_model_dir, out)
    process = start(command)
    wait_for(lambda: (out / "checkpoint-3" / MARKER).is_file(), process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    log = " ".join(output.split())
    assert process.returncode == PREEMPTED_EXIT, log[-3000:]
    state = json.loads(max(out.glob("checkpoint-*/trainer_state.json"), key=os.path.getmtime).read_text())
    stopped = state["global_step"]
    assert 3 < stopped < STEPS  # a step of its own, not the last periodic save
    assert f"preempted: stopped at step {stopped} after writing {out}/checkpoint-{stopped}" in log
    assert (out / f"checkpoint-{stopped}" / MARKER).is_file()
    code, log = run(command)
    assert code == 0, log[-3000:]
    assert f"resuming from {out}/checkpoint-{stopped} (step {stopped})" in log
    assert_same_weights(uninterrupted, out)


@pytest.mark.e2e
def test_sigterm_stops_every_rank_at_the_same_step(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    process = start(train_command(tiny_model_dir, out), "--nproc", "2")
    wait_for(lambda: (out / "checkpoint-3" / MARKER).is_file(), process)
    process.send_signal(signal.SIGTERM)  # to the launching `ossft train` only: it passes the signal on
    output, _ = process.communicate(timeout=300)
    log = " ".join(output.split())
    assert process.returncode == PREEMPTED_EXIT, log[-3000:]
    stops = {rank: log.split(f"rank {rank} of 2: preempted: stopped at step ")[1].split()[0] for rank in (0, 1)}
    assert stops[0] == stops[1], stops
    checkpoint = out / f"checkpoint-{stops[0]}"
    assert (checkpoint / MARKER).is_file()
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}


@pytest.mark.e2e
def test_changed_recipe_is_refused_unless_resume_never(uninterrupted, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    command = train_command(tiny_model_dir, out, "train.max_steps=3")
    assert run(command)[0] == 0
    code, log = run(train_command(tiny_model_dir, out, "train.max_steps=6", "lora.r=4"))
    assert code == 2
    assert f"cannot resume from {out}/checkpoint-3: the lora: section changed since it was saved" in log
    assert "lora was r=8, lora_alpha=16" in log and "now r=4, lora_alpha=16" in log
    assert "Set output.resume: never" in log and "Traceback" not in log
    code, log = run(train_command(tiny_model_dir, out, "train.max_steps=6", "data.val_set_size=10"))
    assert code == 2 and "the training data changed" in log
    code, log = run(train_command(tiny_model_dir, out, "train.max_steps=6", "lora.r=4", "output.resume=never"))
    assert code == 0, log[-3000:]
    assert "resuming" not in log


@pytest.mark.e2e
def test_nonfinite_losses_stop_the_run_and_keep_the_last_good_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    # A learning rate of 1e30 turns the weights to inf in the first update: every later loss is NaN.
    code, log = run(train_command(tiny_model_dir, out, "train.learning_rate=1e30", "train.warmup_steps=0"))
    assert code == 2, log[-3000:]
    assert "the loss was not finite (NaN or inf) for 3 steps in a row, the last at step 4" in log
    assert "no checkpoint was saved before it" in log  # step 3's save came after a NaN step: refused
    assert not list(out.glob("checkpoint-*")) and not (out / "adapter_model.safetensors").exists()


def test_quickstart_saves_at_least_every_quarter_of_its_steps():
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    examples = 608  # 240 sample rows -> 608 per-turn examples (tests/test_quickstart.py checks this count)
    steps = math.ceil(examples / recipe.train.per_device_train_batch_size) * recipe.train.num_train_epochs
    assert recipe.train.save_steps * 4 <= steps


def test_an_explicit_resume_path_must_be_a_complete_checkpoint_of_this_run(tmp_path):
    from ossft.errors import UserError
    from ossft.train.resume import choose_checkpoint, write_marker

    identity = {"base_model": "m", "lora": None, "data": "d1"}
    good, cut = tmp_path / "checkpoint-4", tmp_path / "checkpoint-8"
    for folder in (good, cut):
        folder.mkdir()
        (folder / "optimizer.pt").write_bytes(b"x" * 100)
    write_marker(good, 4, identity)
    write_marker(cut, 8, identity)
    (cut / "optimizer.pt").write_bytes(b"x" * 60)  # cut short after the marker was written
    assert choose_checkpoint(str(good), tmp_path, identity, lambda line: None) == good
    with pytest.raises(UserError, match=r"checkpoint-8 cannot be resumed: optimizer.pt is 60 bytes, 100 written"):
        choose_checkpoint(str(cut), tmp_path, identity, lambda line: None)
    with pytest.raises(UserError, match=r"is not a folder"):
        choose_checkpoint(str(tmp_path / "nowhere"), tmp_path, identity, lambda line: None)
    with pytest.raises(UserError, match=r"the training data changed"):
        choose_checkpoint(str(good), tmp_path, {**identity, "data": "d2"}, lambda line: None)
    # auto: the newest complete one; the damaged newer one is moved aside and reported
    said: list[str] = []
    assert choose_checkpoint("auto", tmp_path, identity, said.append) == good
    assert (tmp_path / "partial-checkpoint-8").is_dir() and "skipped checkpoint-8: optimizer.pt is 60 bytes" in said[0]
    assert choose_checkpoint("never", tmp_path, identity, said.append) is None
