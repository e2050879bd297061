"""Atomic writes: every output file goes through a temporary file and a rename, so none is ever half-written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from loraclf.errors import UserError


def umask() -> int:
    """The process's umask, read when a file is written (a program may change it after importing loraclf)."""
    try:  # Linux reports it without changing it, so no other thread can create a file under umask 0
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0)
        os.umask(mask)
        return mask


def temp_file(path: Path, suffix: str = ".tmp") -> str:
    """A new empty file beside `path`, to be renamed over it; readable as the umask allows (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
    return tmp


def temp_folder(target: Path) -> Path:
    """A new empty folder beside `target`, to be renamed over it; open as the umask allows (mkdtemp makes 0700,
    which would hide a run or an export from everyone else)."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def follow_umask(folder: Path) -> None:
    """Give everything under `folder` the permissions the umask gives new files and folders: libraries that
    write through private temporary files (transformers' weight shards are 0600) would hide them from others."""
    mask = umask()
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def write_file(path: Path, fill: Callable[[str], None]) -> None:
    """Write `path` through `fill(tmp)`, which writes a temporary file beside it, then rename: a reader never sees
    half a file, and an interruption leaves the old file (or none) in place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_file(path)
    except OSError as exc:
        raise UserError(f"output {path}: cannot write there ({exc.strerror or exc})") from None
    try:
        fill(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"output {path}: cannot write ({exc.strerror or exc})") from None
        raise


def write_text(path: Path, text: str) -> None:
    def fill(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    write_file(path, fill)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def replace_folder(target: Path, fill) -> None:
    """Fill a temporary sibling folder with `fill(folder)`, then swap it in for `target`."""
    tmp = temp_folder(target)
    try:
        fill(tmp)
        follow_umask(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
