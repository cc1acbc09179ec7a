"""requirements.lock is what the suite runs on: the set-up's check, and the venv itself."""

from __future__ import annotations

import importlib.util
import os

import pytest

from .conftest import REPO

spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_lock)


def test_the_check_names_each_package_that_differs(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\ntorch==2.13.0\nPyYAML==6.0.4\ntyping_extensions==4.16.0\nmissing-one==1.0\n")
    pins = check_lock.locked(lock)
    assert pins == {"torch": "2.13.0", "pyyaml": "6.0.4", "typing-extensions": "4.16.0", "missing-one": "1.0"}
    present = {"torch": "2.13.0", "pyyaml": "6.0.3", "typing-extensions": "4.16.0"}
    assert check_lock.differences(pins, present) == [
        "missing-one: locked 1.0, installed nothing",
        "pyyaml: locked 6.0.4, installed 6.0.3",
    ]


def test_a_build_label_satisfies_the_lock():
    # torch 2.13.0+cpu here, 2.13.0+cu130 on a GPU machine: both are the locked torch==2.13.0.
    assert check_lock.installed()["torch"] == check_lock.locked(REPO / "requirements.lock")["torch"]


@pytest.mark.skipif(os.environ.get("OSSFT_UNLOCKED") == "1", reason="scripts/check-latest.sh runs unlocked on purpose")
def test_this_environment_is_the_locked_set():
    assert check_lock.differences(check_lock.locked(REPO / "requirements.lock"), check_lock.installed()) == []
