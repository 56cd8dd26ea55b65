"""The documentation site builds with `mkdocs build --strict`, and its facts hold.

The build test needs the `docs` extra (mkdocs-material, mkdocstrings[python],
pymdown-extensions) and is skipped with that reason without it. The other tests read
files only: the API page lists every public name, and the BibTeX of the citing page
agrees with CITATION.cff.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import flowspec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _docs_tools_missing() -> str | None:
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
            return f'{package} is not installed (pip install ".[docs]")'
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once with `mkdocs build --strict` (skipped without the docs extra)."""
    missing = _docs_tools_missing()
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def test_mkdocs_build_strict(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in flowspec.__all__:
        assert f'id="flowspec.{name}"' in api, f"the API page renders no entry for {name}"
    # the Sphinx roles of the docstrings were rewritten for the site (docs/griffe_sphinx_roles.py)
    assert ":math:`" not in api and ":class:`" not in api and ":func:`" not in api
    # no reStructuredText literal left in the rendered text (code blocks aside)
    text = re.sub(r"<(pre|code)\b.*?</\1>", "", api, flags=re.S)
    assert "``" not in html.unescape(re.sub(r"<[^>]+>", " ", text))
    # each parameter has its own entry with its own default
    for cls, param, default in (
        ("VariancePreserving", "beta_min", "0.1"),
        ("VariancePreserving", "beta_max", "20.0"),
        ("VarianceExploding", "sigma_min", "0.01"),
        ("VarianceExploding", "sigma_max", "80.0"),
    ):
        start = api.index(f'id="flowspec.{cls}"')
        section = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", api[start:])).split())
        row = re.search(rf"\b{param} float (.*?)(?= \w+ float | Examples:? | Source )", section)
        assert row and row.group(1).split()[-1] == default, (cls, param, row and row.group(0))


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


# -- the site in a real browser: KaTeX renders every formula, and display maths fits --
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTHS = {"laptop": 1280, "phone": 390}

# Runs in the harness page once every page has loaded in its iframe (same origin): per
# page, the formulas that arithmatex emitted, those that KaTeX did not render, KaTeX
# errors, TeX left in the text outside code, and display formulas wider than their box
# (a box that cannot scroll cuts them).
_PROBE = r"""
<script>
function probe(frame) {
  const doc = frame.contentDocument;
  const out = {page: frame.dataset.page, maths: 0, unrendered: [], errors: [], raw: [],
               wide: [], cut: []};
  for (const el of doc.querySelectorAll(".arithmatex")) {
    out.maths += 1;
    if (!el.querySelector(".katex")) out.unrendered.push(el.textContent.slice(0, 80));
  }
  for (const el of doc.querySelectorAll(".katex-error")) out.errors.push(el.textContent.slice(0, 80));
  const walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT);
  const tex = /\$\$|\\\(|\\\[|\\(frac|mathbb|mathcal|lVert|sigma|alpha|begin)\b/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest(".katex, code, pre, script, style, .md-search, textarea")) continue;
    if (tex.test(n.textContent)) out.raw.push(n.textContent.trim().slice(0, 80));
  }
  for (const el of doc.querySelectorAll(".katex-display")) {
    const box = el.closest(".arithmatex") || el.parentElement;
    // content that starts left of its box cannot be scrolled to: it is cut
    const lefts = Array.from(el.querySelectorAll(".base"), (b) => b.getBoundingClientRect().left);
    if (Math.min(...lefts) < box.getBoundingClientRect().left - 1) {
      out.cut.push(el.textContent.slice(0, 60));
    } else if (box.scrollWidth > box.clientWidth + 1) {
      const scrolls = ["auto", "scroll"].includes(getComputedStyle(box).overflowX);
      (scrolls ? out.wide : out.cut).push(el.textContent.slice(0, 60));
    }
  }
  return out;
}
window.addEventListener("load", () => setTimeout(() => {
  const results = Array.from(document.querySelectorAll("iframe")).map(probe);
  document.getElementById("result").textContent = JSON.stringify(results);
}, 3000));
</script>
"""


@pytest.fixture(scope="module")
def served_site(site):
    """The built site on a loopback HTTP server (iframes of one origin can be probed)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))

    class Quiet(handler.func):  # type: ignore[name-defined]
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("width_name", list(WIDTHS))
def test_maths_renders_in_chromium(served_site, width_name, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    site, base = served_site
    width = WIDTHS[width_name]
    pages = sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("index.html")
        if p.parent != site / "search" and "assets" not in p.parts
    )
    frames = "\n".join(
        f'<iframe data-page="{page}" src="/{page}" width="{width}" height="800"></iframe>'
        for page in pages
    )
    harness = site / f"_harness_{width_name}.html"
    harness.write_text(
        f'<!doctype html><html><body><pre id="result"></pre>{frames}{_PROBE}</body></html>',
        encoding="utf-8",
    )
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={width + 40},900", "--virtual-time-budget=30000", "--dump-dom",
         f"{base}/{harness.name}"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert match and match.group(1), f"the harness reported nothing:\n{proc.stderr[-3000:]}"
    results = json.loads(html.unescape(match.group(1)))
    assert {r["page"] for r in results} == set(pages)
    assert sum(r["maths"] for r in results) > 100  # the theory pages are full of formulas
    problems = {
        r["page"]: {k: r[k] for k in ("unrendered", "errors", "raw", "cut") if r[k]}
        for r in results
    }
    if width_name == "laptop":  # at 1280 px every display formula fits its column
        for r in results:
            if r["wide"]:
                problems[r["page"]]["wide"] = r["wide"]
    problems = {page: found for page, found in problems.items() if found}
    assert not problems, json.dumps(problems, indent=1)
