"""docs/use-from.md: every ```python block runs as written in a fresh interpreter, from an empty
folder and offline, and prints the lines its ``# -> ...`` comments say."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from doc_snippets import python_blocks

DOC = Path(__file__).parents[1] / "docs" / "use-from.md"
TEXT = DOC.read_text()
BLOCKS = python_blocks(TEXT)
NEEDS = {"timm": ["timm"], "hugging_face_transformers": ["timm", "transformers"], "torchvision": []}


def test_the_page_has_its_sections_and_is_linked():
    heads = re.findall(r"^## (.+)$", TEXT, re.M)
    assert heads == ["timm", "Hugging Face transformers", "torchvision", "MMDetection / MMPretrain (untested)"]
    assert [i for i, _ in BLOCKS] == ["timm_0", "hugging_face_transformers_0", "torchvision_0"]
    mm = TEXT[TEXT.index("## MMDetection"):]
    assert "**Untested here.**" in mm and 'type="mmpretrain.TIMMBackbone"' in mm and "```python" not in mm
    assert "docs/use-from.md" in (DOC.parents[1] / "README.md").read_text()


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[i for i, _ in BLOCKS])
def test_snippet_runs_and_prints_what_it_says(code, tmp_path, request):
    section = request.node.callspec.id.rsplit("_", 1)[0]
    for module in NEEDS[section]:
        pytest.importorskip(module)
    if section == "hugging_face_transformers":
        from transformers.utils import is_torch_available

        if not is_torch_available():  # transformers 5 refuses torch < 2.6 (the floor pair has 2.4.1)
            pytest.skip(f"this transformers needs a newer torch than {torch.__version__} (transformers >= 5: torch >= 2.6)")
    expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*#\s*->\s*(.+)$", code, re.M)]
    assert expected, "a snippet shows what it prints"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == expected
