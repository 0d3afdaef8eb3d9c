"""When to draw a progress bar: only when one is asked for and stderr is a terminal.

In a log file (CI, ``nohup``, a pipe) a bar is one ever-growing line of carriage returns, so there
the long jobs log a few readable lines instead. ``TQDM_DISABLE=1`` turns every bar off.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


def wanted(requested: bool = True) -> bool:
    """``requested``, unless stderr is not a terminal or ``TQDM_DISABLE`` is set."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    return bool(requested) and not off and sys.stderr.isatty()


class DocProgress:
    """Texts done out of a total: a tqdm bar on a terminal, else a readable log line every ``every_s``
    seconds.

    :meth:`update` advances by whole chunks; inside :meth:`track` every batch the model runs advances it too
    (a forward hook on the model's first module counts the rows), so a long chunk is not one silent step.
    Both count the same texts, so the bar shows the larger of the two.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "documents", every_s: float = 30.0,
                 logger: Any = None, enabled: bool = True) -> None:
        import logging
        import time

        from tqdm.auto import tqdm

        self.total, self.desc, self.unit, self.every_s = int(total), desc, unit, float(every_s)
        self.logger = logger or logging.getLogger("ragcun")
        self.enabled = bool(enabled)
        self.bar = tqdm(total=self.total, desc=desc, unit=unit[:-1] if unit.endswith("s") else unit,
                        dynamic_ncols=True) if self.enabled and wanted() else None
        self._chunked = self._hooked = self._shown = 0
        self._t0 = self._last = time.perf_counter()

    def _show(self) -> None:
        import time

        done = min(max(self._chunked, self._hooked), self.total)
        if self.bar is not None:
            self.bar.update(done - self._shown)
        elif self.enabled:
            now = time.perf_counter()
            if done > self._shown and (now - self._last >= self.every_s
                                       or (done >= self.total > self._shown)):
                rate = done / max(now - self._t0, 1e-9)
                left = (self.total - done) / rate if rate > 0 else 0.0
                eta = (f", about {left / 60:.0f} min left" if left >= 90
                       else (f", about {left:.0f} s left" if done < self.total else ""))
                self.logger.info("%s: %s / %s %s (%.1f/s%s)", self.desc, f"{done:,}", f"{self.total:,}",
                                 self.unit, rate, eta)
                self._last = now
        self._shown = done

    def update(self, n: int) -> None:
        self._chunked += int(n)
        self._show()

    @contextlib.contextmanager
    def track(self, model: Any) -> Iterator[None]:
        """Count the rows of every batch ``model`` encodes inside the block (no effect on a model without
        modules)."""
        first = next(model.children(), None) if hasattr(model, "children") else None
        handle = None
        if first is not None and hasattr(first, "register_forward_hook"):
            def hook(_module: Any, args: tuple, _output: Any) -> None:  # after each batch
                features = args[0] if args else None
                mask = (features.get("attention_mask", features.get("input_ids"))
                        if hasattr(features, "get") else None)
                if mask is not None and hasattr(mask, "shape"):
                    self._hooked += int(mask.shape[0])
                    self._show()

            handle = first.register_forward_hook(hook)
        try:
            yield
        finally:
            if handle is not None:
                handle.remove()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> DocProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
