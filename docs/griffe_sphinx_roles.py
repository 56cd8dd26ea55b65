"""Griffe extension: render the Sphinx roles of flowspec's numpydoc docstrings in MkDocs.

The docstrings stay plain numpydoc (readable by ``help()``, Sphinx and numpydoc's
validator); for the site, this rewrites, at collection time,

* ``:math:`x``` to ``$x$`` and a ``.. math::`` block to ``$$ ... $$`` (KaTeX renders
  both through pymdownx.arithmatex),
* ``:func:`~flowspec.euler``` and the other cross-reference roles to mkdocstrings
  cross-references ``[euler][flowspec.euler]`` (``~`` keeps only the last name),
* ``paper eq. N`` stays text: the theory pages link each equation to its function.

Doctest prompts (``>>>``) are left alone: numpydoc's Examples section renders them as
code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:func|meth|class|attr|data|mod|obj|exc):`(~?)([\w.]+)`")
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _xref(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2)
    if not target.startswith("flowspec"):
        return f"`{target}`"
    label = target.rsplit(".", 1)[-1] if tilde else target
    return f"[`{label}`][{target}]"


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group("indent")
        body = [match.group("first")] if match.group("first").strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        out.extend(["", f"{indent}$$", *(f"{indent}{b}" for b in body), f"{indent}$$", ""])
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def convert(text: str) -> str:
    """Rewrite the Sphinx roles of one docstring for MkDocs (see the module docstring)."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    return _XREF_ROLE.sub(_xref, text)


class SphinxRoles(griffe.Extension):
    """Apply :func:`convert` to every docstring griffe collects."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
