"""The `botnet` command as a user runs it."""

import json
import subprocess
import sys

import pytest

from botnet.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    names = capsys.readouterr().out.split()
    assert "botnet50" in names and "botnet_t7" in names and names == sorted(names)
    assert main(["list", "botnet_s1*", "-v"]) == 0
    out = capsys.readouterr().out
    assert "botnet_s1_128" in out and "Table 13" in out


def test_profile_json(capsys):
    assert main(["profile", "botnet50", "--img-size", "1024", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"name", "img_size", "params", "params_without_norm", "madds"} <= set(d)
    assert d["img_size"] == [1024, 1024] and d["params"] > d["params_without_norm"]
    assert main(["profile", "botnet50", "--img-size", "512x768", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["img_size"] == [512, 768]


def test_profile_text_and_errors(capsys):
    assert main(["profile", "seresnet50"]) == 0
    assert "multiply-adds" in capsys.readouterr().out
    assert main(["profile", "botnet50", "--img-size", "200"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert main(["profile", "nosuchnet"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "botnet50", "--img-size", "abc"])
    assert "expected a size like 224" in capsys.readouterr().err


def test_profile_paper(capsys):
    assert main(["profile", "--paper"]) == 0
    out = capsys.readouterr().out
    assert "0 unexplained" in out and "botnet_t7" in out and "MISMATCH" not in out
    assert main(["profile", "--paper", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 34
    assert main(["profile", "--paper", "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| table |") and len(md) == 2 + 34


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "botnet", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("botnet ")
