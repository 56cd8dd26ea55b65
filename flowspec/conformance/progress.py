"""A tiny progress bar for long runs: on stderr, and only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``Progress(total)``; call it once per finished unit, ``close()`` at the end.

    Draws ``label [#####.....] k/total  elapsed`` in place with a carriage return.
    Does nothing when ``stream`` is not a TTY (pipes, CI logs, files), so captured
    output stays clean.
    """

    def __init__(self, total: int, label: str = "checking", stream: TextIO | None = None) -> None:
        self.total = max(int(total), 1)
        self.done = 0
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._draw()

    def __call__(self, label: str | None = None) -> None:
        self.done = min(self.done + 1, self.total)
        if label is not None:
            self.label = label
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // self.total
        elapsed = time.monotonic() - self.start
        line = (
            f"\r{self.label[:40]:<40} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {elapsed:5.1f}s"
        )
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
