"""Every Python block of docs/parameterisations.md runs and its assertions hold."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "parameterisations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_block_runs(code):
    with np.errstate(divide="raise", invalid="raise"):  # they stay off singular points
        exec(compile(code, str(PAGE), "exec"), {"__name__": "docs"})
