"""The copy of the recipe each output folder keeps: what ran, with what software, credentials removed.

A run can only be repeated or explained with the versions that produced it, so the copy opens with
Python's and every library's version and ossft's git commit, and is written before the first step:
a run that crashes still leaves it.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

import yaml

from ossft import __version__
from ossft.files import REPO
from ossft.secrets import without_secrets

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "ossft": __version__}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None  # deepspeed is optional
    found["ossft_git_commit"] = git_commit()
    return found


def git_commit() -> str | None:
    """The commit of the ossft checkout this runs from; None for an installed wheel or no git."""
    repo = REPO
    if not (repo / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def recipe_copy(recipe) -> str:
    """The resolved recipe as YAML (credentials redacted), under a comment block of versions."""
    header = ["# The resolved recipe of this run: every default filled in, credentials redacted.", "# Ran with:"]
    header += [f"#   {name}: {value or 'not installed'}" for name, value in versions().items()]
    return "\n".join(header) + "\n" + recipe_yaml(recipe)


def recipe_yaml(recipe) -> str:
    """The resolved recipe as YAML, every default filled in, credentials redacted."""
    data = without_secrets(recipe.model_dump(mode="json"))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
