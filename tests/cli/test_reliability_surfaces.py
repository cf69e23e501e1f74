"""Bad input and faults on the surfaces around training (issue 20): output paths that are files where
folders are expected (and the other way round), a disk that fills up while a checkpoint is written,
initial weights of another width or of nothing, published weights asked for offline, unreadable
inputs to predict, a run folder given as a checkpoint, and a micro-batch that BatchNorm cannot
train on. Each gives one line and exit code 2, never a traceback. docs/reliability.md lists them."""

import os
import socket
import subprocess
import time

import pytest
import torch

import botnet
from botnet.cli import main
from botnet.checkpoint import load_checkpoint
from botnet.engine.checkpoint import CheckpointManager
from botnet.models.convert import load_pretrained
from runs import cli_errors
from tiny_checkpoints import make_checkpoint, write_images

TINY = ["model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16", "optim.micro_batch=null",
        "run.amp=none", "optim.warmup_epochs=1"]


def _one_line(capsys, prog):
    err = cli_errors(capsys.readouterr().err).strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "run" / "last.pt", img_size=32)


@pytest.mark.parametrize("case", ["train --output FILE", "export --output DIR", "attention --output DIR",
                                  "predict --output FILE"])
def test_output_paths_are_checked_before_any_work(case, ckpt, tiny_data, tmp_path, capsys):
    a_file, a_dir = tmp_path / "afile.txt", tmp_path / "adir"
    a_file.write_text("keep me")
    a_dir.mkdir()
    image = write_images(tmp_path / "img", n=1)[0]
    argv, expected = {
        "train --output FILE": (["train", "--config", "demo", "--data", tiny_data, "--output", str(a_file), *TINY],
                                f"--output {a_file} is a file; expected a folder"),
        "export --output DIR": (["export", "--model", "botnet_tiny", "--format", "onnx", "--output", str(a_dir)],
                                f"--output {a_dir} is a folder; expected a file path such as {a_dir / 'model.onnx'}"),
        "attention --output DIR": (["attention", "--checkpoint", str(ckpt), str(image), "--query", "0,0", "--output",
                                    str(a_dir)], f"--output {a_dir} is a folder; expected a file path such as"),
        "predict --output FILE": (["predict", "--checkpoint", str(ckpt), str(image), "--output", str(a_file)],
                                  f"--output {a_file} is a file; expected a folder"),
    }[case]
    assert main(argv) == 2
    assert expected in _one_line(capsys, f"botnet {argv[0]}")
    assert a_file.read_text() == "keep me" and not any(a_dir.iterdir())


def test_checkpoint_that_is_a_folder_says_so(ckpt, tmp_path, capsys):
    image = write_images(tmp_path / "img", n=1)[0]
    folder = ckpt.parent
    for argv in (["predict", "--checkpoint", str(folder), str(image)], ["eval", "--checkpoint", str(folder)],
                 ["export", "--checkpoint", str(folder), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]):
        assert main(argv) == 2
        err = _one_line(capsys, f"botnet {argv[0]}")
        assert f"checkpoint '{folder}' is a folder; expected a checkpoint file: e.g. {folder / 'last.pt'}" in err, err


def test_predict_exits_2_when_no_image_can_be_read(ckpt, tmp_path, capsys):
    for i in range(2):
        (tmp_path / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "bad0.png"), str(tmp_path / "bad1.png")]) == 2
    err = _one_line(capsys, "botnet predict")
    assert f"none of the 2 images could be read (first: {tmp_path / 'bad0.png'}: " in err
    good = write_images(tmp_path / "ok", n=1)[0]  # one readable image among them: predictions, exit 0
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "bad0.png"), str(good)]) == 0


# ------------------------------------------------------------------------------ initial weights


def test_position_tables_of_another_head_dim_are_a_mismatch_not_a_resize(tmp_path):
    src = botnet.create_model("botnet_tiny", num_classes=3, img_size=64)
    sd = src.state_dict()
    name = next(k for k in sd if k.endswith("pos.rel_height"))
    length, dim = sd[name].shape
    model = botnet.create_model("botnet_tiny", num_classes=3, img_size=32)  # shorter tables, same head dim
    rep = load_pretrained(model, sd)
    assert name in rep.loaded and not rep.shape_mismatch
    sd[name] = torch.zeros(length, 2 * dim)  # another head dimension: a model of another width
    with pytest.raises(ValueError, match=rf"the state dict does not fit botnet_tiny: {name} is \({length}, {2 * dim}\) "
                                         r"in the file but \(\d+, \d+\) in the model"):
        load_pretrained(botnet.create_model("botnet_tiny", num_classes=3, img_size=32), sd)


@pytest.mark.parametrize("case", ["another width", "matches nothing"])
def test_pretrained_file_that_does_not_fit_is_one_line_exit_2(case, ckpt, tiny_data, tmp_path, capsys):
    if case == "another width":
        path, overrides = ckpt, ["model.name=botnet50"]  # a botnet_tiny checkpoint into botnet50
        expected = f"model.pretrained: {ckpt} does not fit botnet50: conv1.weight is (16, 3, 7, 7) in the file but " \
                   "(64, 3, 7, 7) in the model (and "
    else:
        path, overrides = tmp_path / "foo.pt", []
        torch.save({"foo": torch.zeros(3)}, path)
        expected = f"model.pretrained: {path} fits no tensor of botnet_tiny (of its 1 tensors, e.g. foo)"
    out = tmp_path / "run"
    assert main(["train", "--config", "demo", "--data", tiny_data, "--output", str(out), *TINY, *overrides,
                 f"model.pretrained={path}"]) == 2
    assert expected in _one_line(capsys, "botnet train")
    assert not out.exists()


def test_pretrained_true_offline_fails_at_once_without_retries(tmp_path, monkeypatch, capsys, caplog):
    """No network (every name lookup fails, as offline): one PretrainedNotFound in well under the
    25 s huggingface_hub's retries took, no retry lines, no message cut mid-word."""
    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var, sub in (("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"), ("TORCH_HOME", "torch")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    caplog.set_level("DEBUG")
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        botnet.create_model("botnet26t_256", pretrained=True)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "huggingface.co cannot be reached: Name or service not known; github.com cannot be reached" in msg
    assert "\n" not in msg and "Retry" not in caplog.text + capsys.readouterr().err


# ------------------------------------------------------------------------------------ the runs


def test_a_micro_batch_of_one_image_at_32px_says_what_to_change(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "demo", "--data", tiny_data, "--output", str(out), *TINY,
                 "optim.batch_size=1"]) == 2
    err = _one_line(capsys, "botnet train")
    assert "step 1: a micro-batch of 1 image(s) leaves a BatchNorm layer one value per channel (the last stage's map " \
           "is 1x1 at data.img_size=32); use at least 2 images per device" in err


def _tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_while_saving_is_one_line_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, capsys):
    """Training into a tmpfs that holds one checkpoint of botnet_tiny (about 4.8 MB with its
    optimizer state) but not two: the second save fails; one line names the mount point, the file
    and the last good checkpoint, which is intact; no partial file is left."""
    small = tmp_path / "small"
    _tmpfs(small, "8m")
    try:
        out = small / "run"
        assert main(["train", "--config", "demo", "--data", tiny_data, "--output", str(out), *TINY,
                     "optim.epochs=2", "run.ckpt_every_steps=2"]) == 2
        err = _one_line(capsys, "botnet train")
        good = out / "ckpt_00000002.pt"
        assert err == f"botnet train: no space left on {small} while saving {out / 'ckpt_00000004.pt'}; the last good " \
                      f"checkpoint is {good}", err
        assert load_checkpoint(good)["step"] == 2 and load_checkpoint(out / "last.pt")["step"] == 2
        assert [s for s, _ in CheckpointManager(out).checkpoints()] == [2] and not list(out.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(small)], check=False)
