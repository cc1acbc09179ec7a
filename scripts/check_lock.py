"""Check that a virtual environment holds exactly the locked versions; exit 1 naming each difference.

Run by scripts/setup.sh after installing from requirements.lock, so a set-up that drifted from the
tested set (a package pip resolved differently, an older copy left in the venv) fails loudly.
A local build label is ignored (torch 2.13.0+cpu or +cu130 satisfies torch==2.13.0), as pip does.
"""

from __future__ import annotations

import sys
from importlib.metadata import distributions
from pathlib import Path


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version.split("+", 1)[0] for d in distributions()}


def differences(pins: dict[str, str], present: dict[str, str]) -> list[str]:
    return [
        f"{name}: locked {version}, installed {present.get(name, 'nothing')}"
        for name, version in sorted(pins.items())
        if present.get(name) != version
    ]


def main() -> int:
    lock = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock")
    wrong = differences(locked(lock), installed())
    for line in wrong:
        print(f"{lock}: {line}", file=sys.stderr)
    if wrong:
        print("the environment is not the locked set; rerun scripts/setup.sh in a new venv", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
