"""The ```python blocks of a Markdown page, named after their section (shared by the doc tests)."""

from __future__ import annotations

import re


def python_blocks(text: str) -> list[tuple[str, str]]:
    """(id from the section heading, code) for every ```python block of ``text``."""
    out: list[tuple[str, str]] = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        heads = re.findall(r"^## (.+)$", text[: m.start()], re.M)
        title = re.sub(r"\W+", "_", heads[-1].lower()).strip("_") if heads else "intro"
        out.append((f"{title}_{sum(1 for t, _ in out if t.startswith(title))}", m.group(1)))
    return out
