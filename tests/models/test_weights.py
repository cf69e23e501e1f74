"""Loading ImageNet ResNet checkpoints into matching layers, with a report (paper footnote 6)."""

import logging

import pytest
import torch
import torchvision

import botnet
from botnet.cli import main
from botnet.models.weights import extract_state_dict, load_matching


@pytest.fixture(scope="module")
def tv_r50_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "resnet50_tv.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def test_torchvision_file_into_botnet50(tv_r50_file):
    model = botnet.create_model("botnet50", num_classes=10)
    rep = load_matching(model, tv_r50_file)
    sd = torch.load(tv_r50_file)
    assert rep.unexpected == [f"layer4.{i}.conv2.weight" for i in range(3)]  # the replaced 3x3 convs
    assert sorted(n for n, *_ in rep.shape_mismatch) == ["fc.bias", "fc.weight"]  # 1000 vs 10 classes
    assert all(".attn." in k or k.startswith("fc.") for k in rep.missing)  # BoT layers stay random
    assert len(rep.loaded) == len(sd) - 3 - 2
    torch.testing.assert_close(model.state_dict()["layer3.5.conv2.weight"], sd["layer3.5.conv2.weight"])
    assert "kept as initialised" in rep.summary() and "layer4.0.attn.qkv.weight" in rep.summary(limit=100)


def test_timm_style_checkpoint_with_prefixes(tv_r50_file):
    sd = torch.load(tv_r50_file)
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
    model = botnet.create_model("resnet50")
    rep = load_matching(model, wrapped)
    assert not rep.missing and not rep.unexpected and not rep.shape_mismatch
    with pytest.raises(ValueError, match="expected a state dict"):
        extract_state_dict({"epoch": 3})
    with pytest.raises(FileNotFoundError):
        load_matching(model, "/nonexistent.pth")


def test_tables_of_another_resolution_load():
    a = botnet.create_model("botnet50", img_size=64)
    b = botnet.create_model("botnet50", img_size=128)
    rep = load_matching(b, a.state_dict())
    assert not rep.shape_mismatch and not rep.missing


def test_train_logs_what_was_loaded(tv_r50_file, tiny_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="botnet")
    rc = main(["train", "--config", "table10_canonical", "--output", str(tmp_path / "r"), "--data", tiny_data,
               "--set", f"model.pretrained={tv_r50_file}", "data.img_size=64", "data.workers=0", "optim.batch_size=8",
               "run.max_steps=1", "run.amp=none"])
    assert rc == 0
    text = caplog.text
    assert "pretrained" in text and "loaded 315 tensors" in text
    assert "layer4.0.conv2.weight" in text and "layer4.0.attn.qkv.weight" in text
