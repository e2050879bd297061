"""What a run was made with: Python and library versions, loraclf's git commit, and the command."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("loraclf", "torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes")


def versions() -> dict[str, str | bool | None]:
    """Python and library versions, and loraclf's git commit (and whether its source differs) where it has one."""
    found: dict[str, str | bool | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    source = Path(__file__).resolve().parents[1]  # the loraclf package
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):  # no git, or a hung one
        commit = dirty = None
    found["git_commit"] = commit.stdout.strip() if commit is not None and commit.returncode == 0 else None
    found["git_dirty"] = bool(dirty.stdout.strip()) if found["git_commit"] and dirty is not None else None
    return found
