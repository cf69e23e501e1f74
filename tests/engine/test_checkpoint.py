"""Checkpoint files: atomic, checksummed, verified on load, rotated by step, newest valid found."""

import os
import random
import subprocess
import sys
import zipfile

import pytest
import torch

from botnet.checkpoint import CheckpointError, load_checkpoint, save_atomic, verify_checkpoint
from botnet.engine.checkpoint import CheckpointManager
from botnet.engine.faults import NonFiniteError


def _ckpt(step, value=1.0):
    return {"model": {"w": torch.full((64, 64), value), "n": torch.tensor(step)}, "step": step, "kind": "test"}


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_round_trip_stays_a_plain_torch_file(tmp_path):
    p = save_atomic(_ckpt(3), tmp_path / "sub" / "a.pt")
    assert p == tmp_path / "sub" / "a.pt" and verify_checkpoint(p) is True
    ck = load_checkpoint(p)
    assert ck["step"] == 3 and torch.equal(ck["model"]["w"], torch.ones(64, 64))
    # the checksum is the zip archive's comment: torch.load and zipfile read the file as it is
    assert torch.load(p, weights_only=False)["step"] == 3
    with zipfile.ZipFile(p) as z:
        assert z.comment.startswith(b"botnet-ckpt sha256=") and z.testzip() is None
    assert not list(p.parent.glob(".*.tmp"))


def test_damage_is_detected_and_named(tmp_path):
    p = save_atomic(_ckpt(1), tmp_path / "a.pt")
    size = p.stat().st_size
    _flip(p, size // 2)  # inside the tensor data: torch.load alone would not notice
    with pytest.raises(CheckpointError, match=r"a\.pt.*is corrupt"):
        load_checkpoint(p)
    assert load_checkpoint(p, verify=False)["step"] == 1  # loads, with wrong numbers
    save_atomic(_ckpt(1), p)
    p.write_bytes(p.read_bytes()[: size // 3])  # truncated: no trailer left, torch.load fails
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(p)
    p.write_bytes(b"PK")
    with pytest.raises(CheckpointError, match="too short"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    assert issubclass(CheckpointError, ValueError)  # the CLI turns it into exit code 2


def test_files_without_checksum_still_load(tmp_path):
    torch.save(_ckpt(2), tmp_path / "plain.pt")
    assert verify_checkpoint(tmp_path / "plain.pt") is False
    assert load_checkpoint(tmp_path / "plain.pt")["step"] == 2


_KILL_MID_WRITE = """
import os, signal, sys, torch
from botnet.checkpoint import save_atomic

class Bomb:  # goes off while torch.save is writing the temporary file
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)

save_atomic({"step": 1, "w": torch.zeros(256, 256)}, sys.argv[1])
save_atomic({"step": 2, "w": torch.ones(256, 256), "bomb": Bomb()}, sys.argv[1])
"""


def test_kill_during_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.pt"
    r = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, str(target)], timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == -9
    assert load_checkpoint(target)["step"] == 1  # the complete previous version
    stale = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(stale) == 1
    assert CheckpointManager(tmp_path).remove_stale_tmp() == stale and not list(tmp_path.glob(".*.tmp"))


def test_rotation_and_last_alias(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    assert m.latest_valid() is None and not m.has_checkpoint()
    for step in (2, 4, 6):
        path = m.save(_ckpt(step), step)
        assert path.name == f"ckpt_{step:08d}.pt"
    assert [s for s, _ in m.checkpoints()] == [6, 4]
    assert os.path.samefile(tmp_path / "last.pt", tmp_path / "ckpt_00000006.pt")
    assert m.candidates() == [tmp_path / "ckpt_00000006.pt", tmp_path / "ckpt_00000004.pt"]
    path, ck = m.latest_valid()
    assert path.name == "ckpt_00000006.pt" and ck["step"] == 6
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)


def test_newest_damaged_falls_back_to_previous(tmp_path, caplog):
    m = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2, 3):
        m.save(_ckpt(step), step)
    _flip(tmp_path / "ckpt_00000003.pt", 2000)  # also damages last.pt: the same file
    caplog.set_level("WARNING")
    path, ck = m.latest_valid()
    assert path.name == "ckpt_00000002.pt" and ck["step"] == 2
    assert "ckpt_00000003.pt" in caplog.text and "corrupt" in caplog.text
    for step in (1, 2):
        _flip(tmp_path / f"ckpt_{step:08d}.pt", 2000)
    with pytest.raises(CheckpointError, match="no valid checkpoint in"):
        m.latest_valid()


def test_legacy_last_pt_is_a_candidate(tmp_path):
    torch.save(_ckpt(5), tmp_path / "last.pt")  # a run from before step files and checksums
    m = CheckpointManager(tmp_path)
    assert m.has_checkpoint()
    assert m.latest_valid()[1]["step"] == 5


def test_refuses_to_overwrite_with_non_finite_weights(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    m.save(_ckpt(1), 1)
    with pytest.raises(NonFiniteError, match=r"step 2: non-finite values in model\.w"):
        m.save(_ckpt(2, value=float("nan")), 2)
    assert [s for s, _ in m.checkpoints()] == [1] and load_checkpoint(tmp_path / "last.pt")["step"] == 1
    m.save({**_ckpt(3), "ema": None}, 3)  # absent entries are fine


def test_alias_copies_without_hard_links(tmp_path, monkeypatch):
    def no_link(*a, **k):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    m = CheckpointManager(tmp_path, keep=1)
    m.save(_ckpt(1), 1)
    m.save(_ckpt(2), 2)
    assert not os.path.samefile(tmp_path / "last.pt", tmp_path / "ckpt_00000002.pt")
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2 and [s for s, _ in m.checkpoints()] == [2]
    assert m.candidates()[-1] == tmp_path / "last.pt"  # a copy: tried after the step files


def test_prefix_is_validated():
    with pytest.raises(ValueError, match="prefix"):
        CheckpointManager("x", prefix="a/b")



def test_resuming_from_an_older_step_retires_newer_files(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    for step in (2, 4, 6):
        m.save(_ckpt(step), step)
    retired = m.retire_newer(2)
    assert [p.name for p in retired] == ["ckpt_00000006.pt.retired", "ckpt_00000004.pt.retired"]
    assert [s for s, _ in m.checkpoints()] == [2] and os.path.samefile(tmp_path / "last.pt", tmp_path / "ckpt_00000002.pt")
    m.save(_ckpt(3), 3)
    m.save(_ckpt(5), 5)
    m.save(_ckpt(7), 7)  # rotation counts only the new run's files
    assert [s for s, _ in m.checkpoints()] == [7, 5, 3] and m.latest_valid()[1]["step"] == 7
    assert m.retire_newer(7) == []


def test_an_unreadable_file_is_named_in_one_printable_line(tmp_path):
    """torch.load's reason for random bytes can span lines or carry the bytes themselves (these: the
    unpickler's two-line message); the error quotes it as one printable line."""
    p = tmp_path / "junk.pt"
    p.write_bytes(random.Random(103).randbytes(3000))
    with pytest.raises(Exception) as raw:
        torch.load(p, weights_only=False)
    assert "\n" in str(raw.value)  # the case this test is about
    with pytest.raises(CheckpointError, match="junk.pt' cannot be read") as e:
        load_checkpoint(p)
    assert str(e.value).isprintable() and len(str(e.value).splitlines()) == 1
