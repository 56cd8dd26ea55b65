"""The documentation site builds with `mkdocs build --strict`, and its facts hold.

The build test needs the `docs` extra (mkdocs-material, mkdocstrings[python],
pymdown-extensions) and is skipped with that reason without it. The other tests read
files only: the API page lists every public name, and the BibTeX of the citing page
agrees with CITATION.cff.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import flowspec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_mkdocs_build_strict(tmp_path):
    for module, package in (
        ("mkdocs", "mkdocs"),
        ("material", "mkdocs-material"),
        ("mkdocstrings_handlers.python", "mkdocstrings[python]"),
        ("pymdownx", "pymdown-extensions"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"{package} is not installed (pip install 'flowspec[docs]')")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    for name in flowspec.__all__:
        assert f'id="flowspec.{name}"' in api, f"the API page renders no entry for {name}"
    # the Sphinx roles of the docstrings were rewritten for the site (docs/griffe_sphinx_roles.py)
    assert ":math:`" not in api and ":class:`" not in api and ":func:`" not in api


def test_api_page_lists_every_public_name():
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: flowspec\.(\w+)", api, re.MULTILINE))
    missing = sorted(set(flowspec.__all__) - documented)
    assert not missing, f"docs/api.md has no `::: flowspec.NAME` entry for {missing}"


def _cff(key: str, text: str) -> str:
    match = re.search(rf"^{key}:\s*\"?([^\"\n]+)\"?\s*$", text, re.MULTILINE)
    assert match, f"CITATION.cff has no top-level `{key}`"
    return match.group(1).strip()


def test_citing_page_matches_citation_cff():
    cff = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    citing = (DOCS / "citing.md").read_text(encoding="utf-8")
    software = citing[citing.index("@software{") :]
    paper = citing[citing.index("@inproceedings{") : citing.index("@software{")]

    def field(entry: str, name: str) -> str:
        match = re.search(rf"^\s*{name}\s*=\s*\{{(.+)\}},?\s*$", entry, re.MULTILINE)
        assert match, f"the BibTeX entry has no `{name}`"
        return match.group(1).strip("{} ")

    assert field(software, "title") == _cff("title", cff)
    assert field(software, "version") == _cff("version", cff) == flowspec.__version__
    assert field(software, "date") == _cff("date-released", cff)
    assert field(software, "license") == _cff("license", cff)
    # the paper: title, year, arXiv id and every author's family name
    preferred = cff[cff.index("preferred-citation:") :]
    assert field(paper, "title") in preferred
    assert re.search(r"year:\s*" + field(paper, "year"), preferred)
    assert field(paper, "eprint") in preferred
    families = re.findall(r"family-names:\s*(.+)", preferred)
    assert families and all(name.strip() in field(paper, "author") for name in families)
