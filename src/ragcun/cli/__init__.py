"""ragcun's command line. Each submodule registers its commands on :data:`ragcun.cli.app.app`."""

from __future__ import annotations

from ragcun.cli import data as _data  # noqa: F401
from ragcun.cli import encode as _encode  # noqa: F401
from ragcun.cli import evaluate as _evaluate  # noqa: F401
from ragcun.cli import experiment as _experiment  # noqa: F401
from ragcun.cli import info as _info  # noqa: F401
from ragcun.cli import push as _push  # noqa: F401
from ragcun.cli import retrieval as _retrieval  # noqa: F401
from ragcun.cli import serve as _serve  # noqa: F401
from ragcun.cli import train as _train  # noqa: F401
from ragcun.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
