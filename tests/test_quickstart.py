"""Every ```python block of docs/quickstart.md runs as written, each in its own empty folder."""

import re
from pathlib import Path

import pytest
from doc_snippets import python_blocks

DOC = Path(__file__).parents[1] / "docs" / "quickstart.md"
TEXT = DOC.read_text()
BLOCKS = python_blocks(TEXT)


def test_the_quickstart_has_its_sections():
    heads = re.findall(r"^## (.+)$", TEXT, re.M)
    assert heads[:5] == ["Create a model", "Train a classifier", "Detect", "Look at the attention", "Export to ONNX"]
    assert len(BLOCKS) >= 4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("botnet_cache")


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[i for i, _ in BLOCKS])
def test_snippet_runs(code, tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOTNET_CACHE", str(cache))  # the small built-in data is made once for all snippets
    exec(compile(code, f"{DOC.name}", "exec"), {"__name__": "__quickstart__"})
