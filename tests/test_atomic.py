"""Atomic writes: a whole file or none, with the permissions the umask of the moment gives."""

import os
import stat

import pytest

from loraclf.errors import UserError
from loraclf.rundir import atomic


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask_set_after_import(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert atomic.umask() == mask
        atomic.write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "kept.txt"
    atomic.write_text(target, "old")

    with pytest.raises(TypeError):
        atomic.write_text(target, 42)  # not text: the write fails half-way
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
    with pytest.raises(UserError, match="cannot write there"):
        atomic.write_text(tmp_path / "kept.txt" / "child", "x")


def test_a_replaced_folder_follows_the_umask_whatever_its_writer_did(tmp_path):
    def fill(folder):
        (folder / "inner").mkdir(mode=0o700)
        (folder / "inner" / "weights.bin").write_bytes(b"x")
        os.chmod(folder / "inner" / "weights.bin", 0o600)  # as transformers leaves its weight shards

    old = os.umask(0o022)
    try:
        atomic.replace_folder(tmp_path / "out", fill)
    finally:
        os.umask(old)
    modes = [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out", tmp_path / "out" / "inner",
                                                        tmp_path / "out" / "inner" / "weights.bin")]
    assert modes == [0o755, 0o755, 0o644]
