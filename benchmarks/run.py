#!/usr/bin/env python
"""Run ragcun's benchmark suites and keep their results: ``benchmarks/run.py [SUITE...] [--quick]``.

Each suite (``benchmarks/suites/<name>.py``, contract in ``benchmarks/common.py``) runs in its
own Python process, so one suite's peak memory, threads or crash never leak into another's
figures. This harness adds what makes a number reproducible (date, machine, library
versions, git commit, quick flag), recomputes median/spread/ratio from each row's raw
repetitions, writes ``<out>/<suite>.json`` atomically, prints a table and rewrites
``<out>/SUMMARY.md`` (the Markdown table pasted into ``benchmarks/README.md``) from every
result in ``<out>``.

Examples::

    python benchmarks/run.py --list
    python benchmarks/run.py --quick                 # every suite, small inputs
    python benchmarks/run.py encode sigreg           # full size, two suites
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # suites import ``benchmarks.common``
    sys.path.insert(0, str(REPO))
if str(REPO / "src") not in sys.path and not importlib.util.find_spec("ragcun"):
    sys.path.insert(0, str(REPO / "src"))

SUITES_DIR = REPO / "benchmarks" / "suites"
RESULTS_DIR = REPO / "benchmarks" / "results"
SUMMARY_NAME = "SUMMARY.md"

logger = logging.getLogger("benchmarks.run")


class SuiteError(RuntimeError):
    """A suite returned something that does not follow the contract in ``benchmarks/common.py``."""


# --------------------------------------------------------------------------- discovery
def module_name_for(suite: str) -> str:
    """Suite names use dashes (``train-gpu``), module files underscores (``train_gpu.py``)."""
    return suite.replace("-", "_")


def discover(suites_dir: Path = SUITES_DIR) -> dict[str, Path]:
    """All suites in ``suites_dir``: ``{name: file}``, sorted by name; files starting with ``_`` are not
    suites."""
    found = {}
    for path in sorted(Path(suites_dir).glob("*.py")):
        if path.name.startswith("_"):
            continue
        found[path.stem.replace("_", "-")] = path
    return found


def describe(path: Path) -> str:
    """The first paragraph of a suite's module docstring, on one line, read without importing it (imports are
    heavy)."""
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except SyntaxError as exc:
        return f"(syntax error: {exc})"
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""


def load_suite(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmarks_suite_{module_name_for(path.stem)}", path)
    if spec is None or spec.loader is None:
        raise SuiteError(f"{path}: cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise SuiteError(f"{path}: has no run(quick) function")
    return module


# --------------------------------------------------------------------------- results
def _finite(values: Any, where: str) -> list[float]:
    if not isinstance(values, list | tuple) or not values:
        raise SuiteError(f"{where}: 'values' must be a non-empty list of numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SuiteError(f"{where}: 'values' holds {v!r}, not a number")
        if not math.isfinite(v):
            raise SuiteError(f"{where}: 'values' holds {v!r}; only finite numbers can be summarised")
        out.append(float(v))
    return out


def stats(values: list[float]) -> dict[str, float]:
    """Median and spread of repetitions; ``rel_spread`` = (max − min) / median, the noise to read ratios
    against."""
    med = statistics.median(values)
    out = {
        "median": med,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }
    out["rel_spread"] = (out["max"] - out["min"]) / abs(med) if med else None
    return out


def finalize_row(r: dict[str, Any], where: str) -> dict[str, Any]:
    """Check one row and (re)compute its summaries and ratio ragcun/reference from the raw values."""
    if not isinstance(r, dict):
        raise SuiteError(f"{where}: a row must be a dict (see benchmarks.common.row), got {type(r).__name__}")
    for key in ("task", "metric", "ragcun"):
        if key not in r:
            raise SuiteError(f"{where}: row has no {key!r} field")
    r = dict(r)
    r.setdefault("higher_is_better", True)
    for side in ("ragcun", "reference"):
        if side not in r:
            continue
        entry = dict(r[side])
        entry["values"] = _finite(entry.get("values"), f"{where} {side}")
        entry.update(stats(entry["values"]))
        r[side] = entry
    ref = r.get("reference")
    if ref:
        r["ratio"] = r["ragcun"]["median"] / ref["median"] if ref["median"] else None
        # Ratio bounds from the extremes: a ratio whose band straddles 1 is within noise.
        if ref["min"] and ref["max"]:
            lo, hi = r["ragcun"]["min"] / ref["max"], r["ragcun"]["max"] / ref["min"]
            r["ratio_range"] = [min(lo, hi), max(lo, hi)]
    else:
        r.pop("ratio", None)
    return r


def finalize(raw: Any, suite: str, quick: bool, duration: float, machine: dict[str, Any]) -> dict[str, Any]:
    """Validate a suite's return value and add provenance; raises SuiteError naming the bad field."""
    if not isinstance(raw, dict):
        raise SuiteError(f"suite {suite}: run() must return a dict, got {type(raw).__name__}")
    if raw.get("suite") not in (None, suite):
        raise SuiteError(f"suite {suite}: run() returned suite={raw.get('suite')!r}")
    rows = raw.get("rows", [])
    if not isinstance(rows, list):
        raise SuiteError(f"suite {suite}: 'rows' must be a list")
    if not rows and not raw.get("skipped"):
        raise SuiteError(f"suite {suite}: no rows and no 'skipped' reason")
    out = {
        "suite": suite,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": bool(quick),
        "git": git_info(),
        "duration_s": round(duration, 2),
        "machine": machine,
        "inputs": raw.get("inputs", {}),
        "notes": list(raw.get("notes", [])),
        "rows": [finalize_row(r, f"suite {suite} row {i}") for i, r in enumerate(rows)],
    }
    if raw.get("skipped"):
        out["skipped"] = str(raw["skipped"])
    for key, value in raw.items():  # keep anything else a suite reports
        out.setdefault(key, value)
    return out


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


# --------------------------------------------------------------------------- running
def run_in_process(path: Path, quick: bool) -> Any:
    return load_suite(path).run(quick)


def run_isolated(path: Path, quick: bool, timeout: float | None,
                 threads: int | None = None) -> tuple[Any, dict]:
    """Run one suite in a fresh interpreter; its stdout/stderr stream through, its result comes back as
    JSON."""
    with tempfile.TemporaryDirectory(prefix="ragcun-bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(path), "--result-file",
               str(result_file)]
        if quick:
            cmd.append("--quick")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SuiteError(f"timed out after {timeout:.0f} s") from exc
        if not result_file.exists():
            raise SuiteError(f"worker exited with status {proc.returncode} and wrote no result")
        payload = json.loads(result_file.read_text(encoding="utf-8"))
        if "error" in payload:
            raise SuiteError(payload["error"])
        return payload["result"], payload["machine"]


def worker(path: Path, quick: bool, result_file: Path) -> int:
    """Child side of :func:`run_isolated`."""
    from ragcun.files import write_json

    try:
        from benchmarks.common import machine_info

        result = run_in_process(path, quick)
        write_json(result_file, {"result": result, "machine": machine_info()})  # the child's threads, devices
        return 0
    except BaseException as exc:  # noqa: BLE001 - report anything, including KeyboardInterrupt, to the parent
        write_json(result_file, {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
        return 1


def run_suites(
    names: list[str],
    quick: bool = False,
    out_dir: Path = RESULTS_DIR,
    suites_dir: Path = SUITES_DIR,
    isolate: bool = True,
    timeout: float | None = None,
    threads: int | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Run ``names`` (all suites when empty); return (results by suite, errors by suite). Failures don't
    stop the rest."""
    from benchmarks.common import machine_info
    from ragcun.files import write_json

    available = discover(suites_dir)
    names = names or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"unknown suite(s): {', '.join(unknown)}; "
                         f"available: {', '.join(available) or 'none'} (in {suites_dir})")
    if threads and not isolate:
        import torch

        torch.set_num_threads(threads)
    results, errors = {}, {}
    for name in names:
        logger.info("suite %s (%s)", name, "quick" if quick else "full")
        print(f"\n=== {name} ({'quick' if quick else 'full'}) ===", flush=True)
        t0 = time.perf_counter()
        try:
            if isolate:
                raw, machine = run_isolated(available[name], quick, timeout, threads)
            else:
                raw, machine = run_in_process(available[name], quick), machine_info()
            result = finalize(raw, name, quick, time.perf_counter() - t0, machine)
        except Exception as exc:  # noqa: BLE001 - one broken suite must not cost the others' results
            msg = (str(exc) if isinstance(exc, SuiteError)
                   else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            errors[name] = msg
            print(f"suite {name} FAILED after {time.perf_counter() - t0:.1f} s:\n{msg}", file=sys.stderr,
                  flush=True)
            continue
        write_json(Path(out_dir) / f"{name}.json", result)
        results[name] = result
        print(f"suite {name}: {len(result['rows'])} rows in {result['duration_s']:.1f} s"
              + (f" (skipped: {result['skipped']})" if result.get("skipped") else ""), flush=True)
    write_summary(out_dir, errors)
    return results, errors


# --------------------------------------------------------------------------- reporting
def fmt(x: float | None, digits: int = 3) -> str:
    """Numbers for people: 3 significant digits, thousands grouped."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    ax = abs(x)
    if ax >= 10 ** digits:
        return f"{x:,.0f}"
    if ax == 0:
        return "0"
    if ax < 1e-3:
        return f"{x:.2e}"
    return f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(ax))))}f}"


def fmt_side(side: dict[str, Any] | None) -> str:
    if not side:
        return "–"
    s = fmt(side["median"])
    if side.get("n", 1) > 1 and side.get("rel_spread") is not None:
        s += f" ±{100 * side['rel_spread'] / 2:.0f}%"
    return s


def fmt_extra(extra: dict[str, Any] | None, limit: int = 5) -> str:
    if not extra:
        return ""
    parts = []
    for k, v in list(extra.items())[:limit]:
        parts.append(f"{k}={fmt(v) if isinstance(v, int | float) and not isinstance(v, bool) else v}")
    return ", ".join(parts)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in result["rows"]:
        better = "↑" if r.get("higher_is_better", True) else "↓"
        ratio = fmt(r.get("ratio"), 3) if r.get("ratio") is not None else "–"
        ref = r.get("reference")
        rows.append([
            result["suite"],
            r["task"],
            f"{r['metric']} {better}",
            f"{fmt_side(r['ragcun'])} ({r['ragcun'].get('name', 'ragcun')})",
            f"{fmt_side(ref)} ({ref.get('name')})" if ref else "–",
            ratio,
            fmt_extra(r.get("extra")),
        ])
    return rows


HEADERS = ["suite", "task", "metric", "ragcun (median ±½ range)", "reference", "ratio", "details"]


def print_table(results: dict[str, dict[str, Any]], errors: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ragcun benchmarks (ratio = ragcun / reference; ↑/↓ = which way is better)",
                  show_lines=False)
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    for result in results.values():
        if result.get("skipped"):
            table.add_row(result["suite"], "[yellow]skipped[/]", result["skipped"], "", "", "", "")
        for cells in table_rows(result):
            table.add_row(*cells)
    for name, msg in errors.items():
        table.add_row(name, "[red]FAILED[/]", msg.splitlines()[0][:120] if msg else "", "", "", "", "")
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def summary_markdown(results: list[dict[str, Any]], errors: dict[str, str] | None = None,
                     source: str = "benchmarks/results") -> str:
    """One Markdown section per suite: provenance line, then the comparison table."""
    lines = ["# Benchmark summary", "",
             f"Generated by `benchmarks/run.py` from `{source}/*.json`. ratio = ragcun / reference "
             "(medians); ↑ higher is better, ↓ lower is better; ± is half the min–max range over "
             "repetitions.", ""]
    for result in sorted(results, key=lambda r: r["suite"]):
        m = result.get("machine", {})
        git = result.get("git") or {}
        if not isinstance(git, dict):  # results written before the harness recorded {"commit", "dirty"}
            git = {"commit": str(git)}
        commit = (git.get("commit") or "unknown")[:10] + ("+dirty" if git.get("dirty") else "")
        device = m.get("cuda") or (f"{m.get('processor', '?')}, {m.get('cpu_count', '?')} CPUs, "
                                   f"{m.get('torch_threads', '?')} torch threads")
        if m.get("load_average"):
            device += f", load {m['load_average'][0]:.1f}"
        lines += [f"## {result['suite']}", "",
                  f"{result.get('date', '?')} · {'quick' if result.get('quick') else 'full'} · {device} · "
                  f"torch {m.get('versions', {}).get('torch', '?')} · commit {commit} · "
                  f"{result.get('duration_s', '?')} s", ""]
        if result.get("skipped"):
            lines += [f"Skipped: {result['skipped']}.", ""]
        if result.get("rows"):
            lines.append("| " + " | ".join(HEADERS[1:]) + " |")
            lines.append("|" + "---|" * (len(HEADERS) - 1))
            for cells in table_rows(result):
                lines.append("| " + " | ".join(_md(c) for c in cells[1:]) + " |")
            lines.append("")
        for note in result.get("notes", []):
            lines.append(f"- {_md(str(note))}")
        if result.get("notes"):
            lines.append("")
    for name, msg in (errors or {}).items():
        lines += [f"## {name}", "", f"FAILED in the last run: {_md(msg.splitlines()[0] if msg else '')}", ""]
    return "\n".join(lines).rstrip() + "\n"


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted(Path(out_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("%s: unreadable (%s); left out of the summary", path, exc)
            continue
        if isinstance(data, dict) and "suite" in data and "rows" in data:
            results.append(data)
    return results


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (as the README links it), else as given."""
    try:
        return Path(path).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def write_summary(out_dir: Path, errors: dict[str, str] | None = None) -> Path:
    from ragcun.files import write_text

    return write_text(Path(out_dir) / SUMMARY_NAME,
                      summary_markdown(load_results(out_dir), errors, _display_path(out_dir)))


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="*", metavar="SUITE", help="suites to run (default: all); see --list")
    p.add_argument("--quick", action="store_true",
                   help="small inputs and fewer repetitions (minutes, not hours)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR,
                   help="results directory (default: benchmarks/results)")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument("--summary-only", action="store_true",
                   help="run nothing: rewrite <out>/SUMMARY.md from the results already there, "
                        "and print the table")
    p.add_argument("--suites-dir", type=Path, default=SUITES_DIR, help=argparse.SUPPRESS)
    p.add_argument("--in-process", action="store_true",
                   help="run suites in this process (for debugging; memory figures then leak between suites)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per suite (isolated mode only)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch/BLAS in the suites (default: torch's own choice); "
                        "1 is steadier on a busy machine")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.worker:
        return worker(args.worker, args.quick, args.result_file)
    if args.list:
        for name, path in discover(args.suites_dir).items():
            print(f"{name:12s} {describe(path)}")
        return 0
    if args.summary_only:
        path = write_summary(args.out)
        print_table({r["suite"]: r for r in load_results(args.out)}, {})
        print(f"summary in {path}")
        return 0
    results, errors = run_suites(args.suites, args.quick, args.out, args.suites_dir,
                                 isolate=not args.in_process, timeout=args.timeout, threads=args.threads)
    print_table(results, errors)
    print(f"results in {args.out}; summary in {Path(args.out) / SUMMARY_NAME}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
