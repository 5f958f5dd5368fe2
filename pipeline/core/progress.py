"""Progress of long loops, for a person at a terminal and for a log file.

``tqdm(...)`` is a drop-in for the ``tqdm.tqdm`` calls of this package. When stderr is a terminal it *is* a tqdm
bar. Otherwise (``dvc repro`` piped into a file, CI, ``nohup``) a redrawn bar would be one unreadable line of
carriage returns, so it prints a plain line every ``every`` units instead (default: every 5% of a known total,
every 10 s when the total is unknown) and a last one when it closes: a log shows that a long stage is alive, how
far it is and when it will end.

Nothing is printed where progress is switched off: by the caller (``disable=True``), by ``TQDM_DISABLE=1`` in the
environment (tqdm's own switch, honoured for both forms) or by ``hydramix --quiet`` (``set_quiet``). ``note``
prints a one-off line (e.g. "resuming from step 500") under the same switches.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

_quiet = False
_FRACTION = 0.05  # a line every 5% of a known total
_INTERVAL_S = 10.0  # a line every 10 s of an unknown total


def set_quiet(quiet: bool) -> None:
    """Switch every bar, progress line and note of this process off (``hydramix --quiet``) or back on."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """False under ``hydramix --quiet`` or with ``TQDM_DISABLE`` set to anything but "", 0, false or no."""
    disabled = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    return not (_quiet or disabled)


def note(message: str) -> None:
    """``message`` on stderr as one line, unless progress output is switched off."""
    if enabled():
        print(message, file=sys.stderr, flush=True)


def tqdm(iterable: Iterable[Any] | None = None, *, disable: bool = False, every: int | None = None, **kwargs: Any):
    """A tqdm bar on a terminal, a ``LineProgress`` otherwise; ``every``: units between plain lines."""
    disable = disable or not enabled()
    if _is_terminal(sys.stderr):
        from tqdm import tqdm as bar  # lazy: a command that shows no progress does not pay for the import

        return bar(iterable, disable=disable, **kwargs)
    return LineProgress(iterable, disable=disable, every=every, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


class LineProgress:
    """The part of tqdm's interface this package uses (``update``, ``set_postfix``, ``close``, iteration, ``with``),
    printing plain lines to stderr: ``desc: n/total unit (pct%), rate, elapsed, ETA; postfix``."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        initial: float = 0,
        desc: str | None = None,
        unit: str = "it",
        unit_scale: bool = False,
        disable: bool = False,
        every: int | None = None,
        **_ignored: Any,  # tqdm's display options (leave, ncols, ...) mean nothing for plain lines
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.n = initial
        self.desc = desc or ""
        self.unit = unit
        self.unit_scale = unit_scale
        self.disable = disable
        self.every = every if every is not None else (max(1, math.ceil(total * _FRACTION)) if total else None)
        self.postfix = ""
        self._initial = initial
        self._start = self._last_time = time.monotonic()
        self._last_n = initial
        self._lock = threading.Lock()  # updates may come from worker callbacks
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        with self._lock:
            self.n += n
            if self.disable or self._closed:
                return
            now = time.monotonic()
            if self.every is not None:
                due = self.n - self._last_n >= self.every or (self.total is not None and self.n >= self.total)
            else:
                due = now - self._last_time >= _INTERVAL_S
            if due:
                self._emit(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self.disable and self.n != self._last_n:
                self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        elapsed = now - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        done = self._amount(self.n)
        if self.total:
            parts = [f"{done}/{self._amount(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"]
        else:
            parts = [f"{done} {self.unit}"]
        parts.append(
            f"{self._amount(rate)} {self.unit}/s" if rate >= 1 or not rate else f"{1 / rate:.2f} s/{self.unit}"
        )
        parts.append(f"{_clock(elapsed)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        line = f"{self.desc}: " if self.desc else ""
        line += ", ".join(parts) + (f"; {self.postfix}" if self.postfix else "")
        print(line, file=sys.stderr, flush=True)
        self._last_n, self._last_time = self.n, now

    def _amount(self, value: float) -> str:
        if self.unit_scale:
            for prefix in ("", "k", "M", "G", "T"):
                if abs(value) < 1000:
                    return f"{value:.1f}{prefix}" if prefix else f"{value:.0f}"
                value /= 1000
            return f"{value:.1f}P"
        return f"{value:.1f}" if value != int(value) else f"{int(value)}"


def _clock(seconds: float) -> str:
    """h:mm:ss"""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
