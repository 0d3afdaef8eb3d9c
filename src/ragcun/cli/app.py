"""The typer application that every ``ragcun.cli.*`` module adds its commands to."""

from __future__ import annotations

import logging
from typing import Any

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


#: Libraries whose INFO/DEBUG records are chatter on ragcun's log (some, like bm25s, reset their own
#: logger's level at import, so a handler filter drops them rather than a level set once).
NOISY_LOGGERS = ("httpx", "urllib3", "filelock", "huggingface_hub", "datasets", "fsspec",
                 "sentence_transformers", "transformers", "accelerate", "torch", "matplotlib", "PIL", "bm25s",
                 "faiss", "tensorboard")


class _QuietLibraries(logging.Filter):
    """Keep warnings and errors from the libraries in ``NOISY_LOGGERS``; drop their info and debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in NOISY_LOGGERS)


def setup_logging(verbose: bool = False) -> None:
    import os
    import sys

    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    if not verbose:
        handler.addFilter(_QuietLibraries())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[handler], force=True)
    # library chatter ("Loading weights", "Writing model shards"), read by the libraries at import
    if not verbose:
        for key, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                           ("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
            os.environ.setdefault(key, value)
    # in a log file a progress bar is one ever-growing line: none at all (tqdm reads it)
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def _print_version(value: bool) -> None:
    if value:
        from ragcun import __version__

        console.print(f"ragcun {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="",
                                 help="Debug logging, library messages included."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 metavar="", help="Print ragcun's version and exit."),
) -> None:
    setup_logging(verbose)


#: What a command reports as a one-line error instead of a traceback: every ragcun error is one of these
#: (ConfigError, DataFormatError, RetrieverError are ValueErrors; ModelNotFoundError is an OSError), and
#: so are the system's (a full disk, a missing file, a file where a folder was expected).
#: The encoding runtime and batch options every encoding command shares (see ragcun.runtime).
RUNTIME_HELP = ("The encoding runtime: torch | onnx (ONNX Runtime) | openvino (OpenVINO; the whole model in "
                "one graph). Default: auto (the measured fastest lossless; `evaluate` also checks OpenVINO "
                "int8 on the dataset's labels). --backend: its old name (deprecated).")
PRECISION_HELP = ("fp32 | bf16 (torch, openvino) | int8 (onnx dynamic, openvino static calibrated on the "
                  "corpus). Default: auto (measured on CPUs with bf16 units, else fp32; bf16 on a CUDA GPU).")
DEVICE_HELP = "cpu, cuda, cuda:1, mps … (default: a GPU when there is one, else cpu)."
BATCH_HELP = "Encoding batch size (default: 16 on a CPU, 128 on a GPU, as measured)."


def _check_device(value: str | None) -> str | None:
    """The --device callback: an unknown or absent device is one line naming --device and what is here."""
    from ragcun.runtime import check_device

    try:
        return check_device(value, "--device")
    except ValueError as exc:
        raise fail(str(exc)) from None


def check_bounds(**options: tuple[int | None, int, int | None]) -> None:
    """Each ``flag=(value, lowest, highest)`` checked (None = not given), the flag named: ``--batch-size 0``
    fails before any model loads. Keyword names are flags with ``_`` for ``-`` (``batch_size`` →
    ``--batch-size``)."""
    for key, (value, low, high) in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            bound = f"between {low:,} and {high:,}" if high is not None else f"at least {low:,}"
            raise fail(f"{flag} must be {bound}, got {value:,}")


def device_option() -> Any:
    """The one ``--device`` option of every command that loads a model."""
    return typer.Option(None, "--device", help=DEVICE_HELP, callback=_check_device)


# The encoding options every command that encodes shares: one declaration, one help text each.
def batch_size_option() -> Any:
    return typer.Option(None, "--batch-size", help=BATCH_HELP)


def runtime_option(extra: str = "") -> Any:
    return typer.Option("auto", "--runtime", "--backend", help=RUNTIME_HELP + extra)


def precision_option() -> Any:
    return typer.Option("auto", "--precision", help=PRECISION_HELP)


def max_seq_length_option(extra: str = "") -> Any:
    return typer.Option(None, "--max-seq-length",
                        help="Truncate inputs to N tokens (default: the model's own)." + extra)


def docs_option() -> Any:
    """The one ``--docs`` of every command that reads documents (resolved by
    :func:`ragcun.paths.documents_source`)."""
    return typer.Option(..., "--docs", help="A BEIR dataset name (scifact: found in the data directory), a "
                                            "dataset folder or corpus.jsonl, a JSONL file (id/text/metadata) "
                                            "or id<TAB>text .tsv; .gz ok.")


def data_dir_option() -> Any:
    return typer.Option(None, "--data-dir",
                        help="Where the datasets live (default: $RAGCUN_DATA_DIR, else ../shared/data when "
                             "it exists, else ./data).")


def split_option() -> Any:
    return typer.Option("test", "--split",
                        help="BEIR split whose queries and qrels are used (test, dev, train).")


def no_cache_option() -> Any:
    return typer.Option(False, "--no-cache", metavar="",
                        help="Encode again instead of reading or writing the corpus embedding cache.")


# Hybrid search (a score fused with BM25): the same options on evaluate, index build, search and serve.
FUSION_DEFAULTS = ("zscore", 0.5, None)  # --fusion, --bm25-weight, --dense-weight


def fusion_option() -> Any:
    return typer.Option(FUSION_DEFAULTS[0], "--fusion",
                        help="With --hybrid: zscore (weighted sum of z-scores), convex (of min-max "
                             "normalised scores) or rrf (reciprocal rank fusion).")


def bm25_weight_option() -> Any:
    return typer.Option(FUSION_DEFAULTS[1], "--bm25-weight",
                        help="With --hybrid: BM25's weight beside the model's 1 (convex: BM25's share, in "
                             "[0, 1]); --dense-weight 0: BM25 alone.")


def dense_weight_option() -> Any:
    return typer.Option(FUSION_DEFAULTS[2], "--dense-weight",
                        help="With --hybrid: the model's weight (default 1; convex: 1 − BM25's share).")


def fusion_given(fusion: str, bm25_weight: float, dense_weight: float | None) -> bool:
    """Whether any fusion option differs from its default (the options say something to apply)."""
    return (fusion, bm25_weight, dense_weight) != FUSION_DEFAULTS


def fusion_of(hybrid: bool | None, fusion: str, bm25_weight: float, dense_weight: float | None) -> Any:
    """The :class:`~ragcun.encoding.fusion.Fusion` the hybrid options describe (None without ``--hybrid``);
    bad weights, and fusion options without ``--hybrid`` (never silently ignored), are one line."""
    if not hybrid:
        if fusion_given(fusion, bm25_weight, dense_weight):
            raise fail("--fusion, --bm25-weight and --dense-weight apply to hybrid search: add --hybrid, or "
                       "drop them")
        return None
    from ragcun.encoding.fusion import Fusion

    try:
        return Fusion.hybrid(fusion, bm25_weight, dense_weight)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(f"--hybrid: {exc}") from None


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, KeyError, TypeError)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error (no traceback) and return the Exit to raise.

    The message is printed as it is: a ``[table]`` or a path with brackets is never taken for markup.
    """
    from rich.markup import escape

    # one line, never broken by rich at the console's width: a path in it stays whole, and copyable
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
