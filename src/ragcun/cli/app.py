"""The typer application that every ``ragcun.cli.*`` module adds its commands to."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

app = typer.Typer(
    name="ragcun",
    help="Isotropic Gaussian embeddings for dense retrieval: train, evaluate, search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "datasets", "fsspec", "sentence_transformers",
                  "transformers", "accelerate", "torch", "matplotlib", "PIL", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose and noisy.startswith("sentence") else logging.WARNING)
    if not verbose:  # library chatter ("Loading weights", "Writing model shards"), read by the libraries at import
        import os

        for key, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                           ("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
            os.environ.setdefault(key, value)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


#: What a command reports as a one-line error instead of a traceback: every ragcun error is one of these
#: (ConfigError, DataFormatError, RetrieverError are ValueErrors; ModelNotFoundError is an OSError), and
#: so are the system's (a full disk, a missing file, a file where a folder was expected).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, KeyError, TypeError)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error (no traceback) and return the Exit to raise.

    The message is printed as it is: a ``[table]`` or a path with brackets is never taken for markup.
    """
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    return typer.Exit(code)
