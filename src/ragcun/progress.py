"""When to draw a progress bar: only when one is asked for and stderr is a terminal.

In a log file (CI, ``nohup``, a pipe) a bar is one ever-growing line of carriage returns, so there
the long jobs log a few readable lines instead. ``TQDM_DISABLE=1`` turns every bar off.
"""

from __future__ import annotations

import os
import sys


def wanted(requested: bool = True) -> bool:
    """``requested``, unless stderr is not a terminal or ``TQDM_DISABLE`` is set."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    return bool(requested) and not off and sys.stderr.isatty()
