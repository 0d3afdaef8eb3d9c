"""``auto`` by measurement: on a CPU with bf16 units, time the lossless runtimes once per CPU and model.

Why measure rather than read the flags: the same flags gain differently on different CPUs and models
(bf16 measured 1.49× on an AMD EPYC with AVX-512 BF16 for MiniLM, and is 4× *slower* where it is
emulated), and a model whose vectors bf16 changes beyond the gate must stay fp32 whatever the speed.

The probe encodes :data:`PROBE_SIZE` passages at the model's sequence length with each candidate
(torch fp32 — the reference —, torch bf16, ONNX Runtime fp32, OpenVINO fp32 and bf16), keeps only
candidates whose *smallest* cosine to the fp32 vectors is at least :data:`COSINE_GATE`, and picks the fastest
of those if it beats fp32 by :data:`MARGIN` (timing noise on a shared 2-core VM is about 5 %); of candidates
within :data:`TIE` of the fastest, the most exact.

int8 is lossy by construction (cosine 0.985–0.995 to fp32), so no cosine gate can admit it: it is a candidate
only where the caller brings labelled data (:class:`LabelledCheck`; ``ragcun evaluate`` builds one from the
dataset it evaluates) on a CPU with int8 units, and is taken when OpenVINO int8, calibrated on the corpus,
loses at most :data:`MAX_NDCG_LOSS` NDCG@10 on that data and beats the lossless choice by :data:`MARGIN`.
Everywhere else (a retriever, ``encode``, the experiment) ``auto`` stays lossless, and
``RAGCUN_AUTO_INT8=0`` keeps ``evaluate`` lossless too.

Verdicts are cached in ``$RAGCUN_CACHE_DIR/runtime/auto.json`` under the CPU (model name and its vector
flags) and the model's fingerprint and sequence length (plus the check's data for int8), so they are
measured once (about 20 s for MiniLM, a minute more for the int8 check) and ``ragcun info`` can show them.
On a CPU without bf16 units nothing is measured: fp32, as measured on AVX2 (docs/performance.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ragcun.files import write_json
from ragcun.fingerprint import model_fingerprint
from ragcun.paths import cache_dir
from ragcun.runtime.spec import BackendUnavailableError, Runtime, cpu_has_bf16, cpu_has_int8, cpu_info

logger = logging.getLogger(__name__)

COSINE_GATE = 0.9999
#: The lossless candidates: each must reproduce fp32 to the cosine gate before its speed counts.
LOSSLESS = (Runtime("torch", "bf16"), Runtime("onnx", "fp32"), Runtime("openvino", "fp32"),
            Runtime("openvino", "bf16"))
INT8 = Runtime("openvino", "int8")
#: The most NDCG@10 (×100) the labelled check may lose for ``auto`` to take int8 (the issue's bound).
MAX_NDCG_LOSS = 0.5
#: ``RAGCUN_AUTO_INT8=0`` keeps ``auto`` lossless even where a labelled check is at hand.
INT8_ENV = "RAGCUN_AUTO_INT8"
MARGIN = 1.10
TIE = 1.05  # within 5 % of the fastest: as fast, given the noise of one probe
PROBE_SIZE = 32
#: The flags that decide what can gain (recorded in the cache key, so two CPU kinds never share a verdict).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")

_SENTENCES = (
    "Mitochondrial dysfunction is implicated in the progression of several neurodegenerative diseases.",
    "The randomized controlled trial enrolled 412 adults with type 2 diabetes across nine sites.",
    "Dietary fibre intake was inversely associated with all-cause mortality in the cohort.",
    "Vitamin D supplementation did not reduce the incidence of cancer or cardiovascular events.",
    "Gut microbiota composition shifted within days of a change from a plant-based to an animal-based diet.",
    "Statins lower low-density lipoprotein cholesterol by inhibiting HMG-CoA reductase in the liver.",
    "Researchers measured telomere length in leukocytes of participants at baseline and after five years.",
    "The vaccine elicited neutralising antibodies in 94 percent of recipients after the second dose.",
    "Chronic inflammation is a shared feature of obesity, insulin resistance and atherosclerosis.",
    "Long-term exposure to fine particulate matter increases the risk of lung cancer among non-smokers.",
    "Sleep deprivation impaired glucose tolerance in healthy volunteers after only one week.",
    "Meta-analysis of prospective studies found no association between egg consumption and stroke.",
)


def probe_texts(n: int = PROBE_SIZE) -> list[str]:
    """``n`` deterministic passages of varied length (a few words to a few hundred), so the probe sees
    both short queries and passages that fill the sequence length."""
    out = []
    for i in range(n):
        words = 3 + (i * 37) % 260  # 3 … 262 words, spread over the range
        text, j = [], i
        while sum(len(s.split()) for s in text) < words:
            text.append(_SENTENCES[j % len(_SENTENCES)])
            j += 5
        out.append(" ".join(" ".join(text).split()[:words]))
    return out


def cpu_key(cpu: tuple[str | None, set[str]] | None = None) -> str:
    """This CPU as the cache names it: its model name and which of the decisive vector flags it has."""
    name, flags = cpu if cpu is not None else cpu_info()
    return f"{name or 'unknown CPU'} [{' '.join(f for f in VECTOR_FLAGS if f in flags) or 'no vector flags'}]"


def cache_file() -> Path:
    return cache_dir("runtime") / "auto.json"


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The measured verdicts (an unreadable cache is measured again, not an error: it is only a cache)."""
    path = path or cache_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _time(model: Any, texts: list[str], batch_size: int) -> tuple[float, Any]:
    import numpy as np

    # warm-up: first-call allocations, lazy kernels
    model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
    start = time.perf_counter()
    vecs = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - start, np.asarray(vecs, dtype=np.float64)


def measure(model: Any, batch_size: int, candidates: list[Runtime] | None = None,
            texts: list[str] | None = None, *, prepare: Callable[..., Any]) -> dict[str, Any]:
    """Time every candidate on the probe and compare its vectors to fp32: ``{tag: {seconds, min_cosine}}``.

    ``prepare`` builds each candidate (:func:`ragcun.runtime.prepare_model`, passed in: it is what calls
    this)."""
    import numpy as np

    texts = texts or probe_texts()
    if candidates is None:
        candidates = list(LOSSLESS)
    ref_s, ref = _time(model, texts, batch_size)
    rows: dict[str, Any] = {}
    for rt in candidates:
        try:
            prepared = prepare(model, rt, owned=False)
        except (BackendUnavailableError, ImportError) as exc:  # onnxruntime absent: not a candidate
            rows[rt.tag] = {"skipped": str(exc).splitlines()[0]}
            continue
        seconds, vecs = _time(prepared, texts, batch_size)
        cos = (vecs * ref).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1))
        rows[rt.tag] = {"seconds": round(seconds, 4), "min_cosine": float(cos.min())}
        del prepared
    # fp32 before and after: the faster of the two, against drift
    again_s, _ = _time(model, texts, batch_size)
    rows["torch-fp32"] = {"seconds": round(min(ref_s, again_s), 4), "min_cosine": 1.0}
    return rows


def pick(rows: dict[str, Any], gate: float = COSINE_GATE, margin: float = MARGIN,
         tie: float = TIE) -> Runtime:
    """The fastest candidate that passes the cosine gate and beats fp32 by ``margin``; else torch fp32.

    Candidates within ``tie`` of the fastest count as equally fast, and of those the most exact wins (ONNX
    Runtime fp32, cosine 1.0, over torch bf16 at the same speed).
    """
    ref = rows["torch-fp32"]["seconds"]
    passing = {tag: row for tag, row in rows.items() if tag != "torch-fp32" and "seconds" in row
               and row["min_cosine"] >= gate and row["seconds"] * margin <= ref}
    if not passing:
        return Runtime()
    fastest = min(row["seconds"] for row in passing.values())
    near = [tag for tag, row in passing.items() if row["seconds"] <= fastest * tie]
    backend, precision = max(near, key=lambda t: passing[t]["min_cosine"]).split("-")
    return Runtime(backend, precision)


class LabelledCheck(Protocol):
    """What ``auto`` needs to judge a lossy runtime: the texts to calibrate on, a key naming the check's data,
    and the NDCG@10 (×100) a model reaches on it (built by :mod:`ragcun.evaluation.runtime_check`)."""

    key: str
    calibration: Sequence[str]

    def ndcg10(self, model: Any) -> float: ...


def choose(model: Any, batch_size: int = 16, cpu: tuple[str | None, set[str]] | None = None,
           path: Path | None = None, gate: float = COSINE_GATE, *, prepare: Callable[..., Any],
           check: LabelledCheck | None = None) -> Runtime:
    """The runtime ``auto`` means for ``model`` on this CPU: cached, else measured (see the module
    docstring). With ``check`` (labelled data, on a CPU with int8 dot-product units) OpenVINO int8 is a
    candidate too, taken when it loses at most :data:`MAX_NDCG_LOSS` NDCG@10 on the check and beats the
    lossless choice by :data:`MARGIN`."""

    cpu = cpu if cpu is not None else cpu_info()
    if not cpu_has_bf16(cpu):
        return Runtime()
    path = path or cache_file()
    key = f"{cpu_key(cpu)} | {model_fingerprint(model)} | seq {getattr(model, 'max_seq_length', None)}"
    entry = read_cache(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("rows"), dict) and "torch-fp32" in entry["rows"] \
            and all(rt.tag in entry["rows"] for rt in LOSSLESS):
        rows = entry["rows"]
    else:  # never measured, or measured before a candidate existed
        logger.info("measuring the encoding runtimes for this model on this CPU (once; cached in %s)", path)
        rows = measure(model, batch_size, prepare=prepare)
        summary = ", ".join(f"{t} {r['seconds']:.2f} s (cos {r['min_cosine']:.6f})" for t, r in rows.items()
                            if "seconds" in r)
        logger.info("auto runtime without int8: %s (%s)", pick(rows, gate).tag, summary)
        measured = datetime.now(UTC).isoformat(timespec="seconds")
        _store(path, key, {"rows": rows, "chosen": pick(rows, gate).tag, "gate": gate,
                           "batch_size": batch_size, "measured": measured})
    chosen = pick(rows, gate)
    if check is None or not cpu_has_int8(cpu) or os.environ.get(INT8_ENV, "1") == "0":
        return chosen
    int8_key = f"{key} | int8 check {check.key}"
    verdict = read_cache(path).get(int8_key)
    if not (isinstance(verdict, dict) and "seconds" in verdict and "ndcg10_loss" in verdict):
        verdict = check_int8(model, batch_size, check, prepare=prepare)
        _store(path, int8_key, verdict)
    best = rows[chosen.tag]["seconds"] if chosen.tag in rows else rows["torch-fp32"]["seconds"]
    if verdict.get("skipped"):
        return chosen
    if verdict["ndcg10_loss"] <= MAX_NDCG_LOSS and verdict["seconds"] * MARGIN <= best:
        logger.info("auto runtime: %s (%.2f s on the probe against %s's %.2f s; NDCG@10 %.2f against fp32's "
                    "%.2f on the labelled check)", INT8.tag, verdict["seconds"], chosen.tag, best,
                    verdict["ndcg10"], verdict["ndcg10_fp32"])
        return INT8
    logger.info("auto runtime: %s (int8 not taken: NDCG@10 loss %.2f on the labelled check, %.2f s on the "
                "probe against %.2f s)", chosen.tag, verdict["ndcg10_loss"], verdict["seconds"], best)
    return chosen


def check_int8(model: Any, batch_size: int, check: LabelledCheck, *, prepare: Callable[..., Any],
               texts: list[str] | None = None) -> dict[str, Any]:
    """OpenVINO int8, calibrated on ``check.calibration``, timed on the probe and scored on the labelled check
    beside torch fp32: ``{seconds, ndcg10, ndcg10_fp32, ndcg10_loss}`` (``skipped`` where it cannot run)."""
    texts = texts or probe_texts()
    t0 = time.perf_counter()
    try:
        int8 = prepare(model, INT8, owned=False, calibration=check.calibration)
    except (BackendUnavailableError, ImportError) as exc:  # openvino absent: int8 is no candidate
        return {"skipped": str(exc).splitlines()[0], "seconds": None, "ndcg10_loss": None}
    setup = time.perf_counter() - t0
    seconds, _ = _time(int8, texts, batch_size)
    logger.info("checking OpenVINO int8 on labelled data (once per model, CPU and corpus; quantised in "
                "%.0f s)", setup)
    got, ref = check.ndcg10(int8), check.ndcg10(model)
    return {"seconds": round(seconds, 4), "ndcg10": round(got, 3), "ndcg10_fp32": round(ref, 3),
            "ndcg10_loss": round(ref - got, 3), "max_loss": MAX_NDCG_LOSS, "setup_seconds": round(setup, 1),
            "measured": datetime.now(UTC).isoformat(timespec="seconds")}


def _store(path: Path, key: str, entry: dict[str, Any]) -> None:
    cache = read_cache(path)  # another process may have written meanwhile: keep its entries
    cache[key] = entry
    write_json(path, cache)
