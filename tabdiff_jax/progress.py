"""Progress of long work: a tqdm bar on a terminal, one plain line every few seconds otherwise.

A bar redrawn with carriage returns is unreadable in a log file or a CI console, so when stderr is
not a terminal :class:`PlainProgress` writes ``desc: 1200/5000 (24%), steps/s=40.1, loss=0.52``
lines instead, at most one every ``interval`` seconds (``TABDIFF_PROGRESS_SECONDS``, default 10).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional


class PlainProgress:
    """The part of tqdm's interface that the training loop uses, printing plain lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", interval: Optional[float] = None, file=None):
        self.total, self.n, self.desc = int(total), int(initial), desc
        self.interval = float(interval if interval is not None else os.environ.get("TABDIFF_PROGRESS_SECONDS", "10"))
        self.file = file
        self._postfix: dict = {}
        self._t0 = self._last = time.monotonic()
        self._printed = False

    def set_postfix(self, values: dict) -> None:
        self._postfix = dict(values)

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval:
            self._write()

    def _write(self, suffix: str = "") -> None:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k}={v}" for k, v in self._postfix.items())
        print(f"{self.desc}: {self.n}/{self.total}{pct}{extra}{suffix}", file=self.file or sys.stderr, flush=True)
        self._last, self._printed = time.monotonic(), True

    def close(self) -> None:
        if self._printed:  # a log that showed progress also shows the end
            self._write(f" in {time.monotonic() - self._t0:.0f} s")
            self._printed = False


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar when ``enabled`` and stderr is a terminal, else :class:`PlainProgress` (or a
    disabled bar when not ``enabled``)."""
    from tqdm.auto import tqdm

    if enabled and not _is_terminal(sys.stderr):
        return PlainProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
