"""The OpenVINO backend: the whole sentence-transformers model (Gaussian head included) converted by
OpenVINO's PyTorch frontend and compiled for the CPU, in fp32, bf16 or statically quantised int8.

Why OpenVINO beside ONNX Runtime: on a CPU with VNNI its int8 kernels quantise the activations ahead of time
(static, calibrated) rather than at every call, and it runs the remaining float operations in bf16 where the
CPU has bf16 units: int8 measured 3.1× torch fp32 on MiniLM here, where ONNX Runtime's dynamic int8 is 1.8×.
Why the PyTorch frontend and not the ONNX export: it keeps attention as one operation that OpenVINO fuses,
and measured faster (fp32 28.8 against 25.5 passages/s, int8 76 against 62) and, once quantised, closer to
fp32 (minimum cosine 0.995 against 0.986) on 400 SciFact passages. ``optimum-intel`` is not used (it pins
transformers < 5.6); NNCF, which it calls underneath, quantises.

* fp32: ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would otherwise run bf16 on some CPUs).
* bf16: the same graph with the bf16 hint (native only on CPUs with AVX-512 BF16 or AMX). fp32 and bf16 are
  checked against torch on a probe batch (cosine ≥ :data:`MIN_COSINE`), so bf16 is a lossless candidate of
  ``auto``.
* int8: :func:`nncf.quantize` (transformer preset: SmoothQuant, bias correction) calibrated on a sample of
  the texts being encoded — the corpus — given as ``calibration``; the float operations that stay run in
  bf16 where the CPU has bf16 units, else fp32. Lossy by construction: ``auto`` admits it only after a
  labelled check (:mod:`ragcun.evaluation.runtime_check`).

Cache: ``<cache>/openvino/<model fingerprint>-v<N>/`` holds the converted graph (``model.xml``, ``model.bin``,
``export.json`` with their sha256) and, per calibration sample, ``int8-<sample sha256[:16]>/``. Each is
written into a temporary folder and renamed in, so a model (and sample) is converted and quantised once,
and a file that no longer matches its recorded hash is made again, never run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ragcun.files import sha256_file
from ragcun.fingerprint import model_fingerprint, texts_fingerprint
from ragcun.paths import cache_dir
from ragcun.runtime.onnx import OnnxEncoder, _cosine, _Graph, _quiet, probe_inputs, wrap
from ragcun.runtime.spec import BackendUnavailableError, Runtime, cpu_has_bf16, require_openvino

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
EXPORT_VERSION = 1  # bump when the conversion or the int8 recipe changes: old graphs are then ignored
#: The most calibration passages used (NNCF's statistics are per-tensor min/max and SmoothQuant scales: a
#: few hundred texts saturate them); a longer sample is thinned evenly, deterministically.
CALIBRATION_SIZE = 128
#: What an fp32 or bf16 compile must reproduce of torch on the probe batch to be used.
MIN_COSINE = 0.9999


def float_hint(precision: str) -> str:
    """OpenVINO's inference precision for ``precision``: int8's float operations run bf16 where the CPU has
    bf16 units (measured 1.2× f32 with the same int8 vectors to cosine 0.9999), else f32."""
    if precision == "fp32":
        return "f32"
    if precision == "bf16":
        return "bf16"
    return "bf16" if cpu_has_bf16() else "f32"


def _compile(ov: Any, graph: Any, precision: str) -> Any:
    config = {"INFERENCE_PRECISION_HINT": float_hint(precision), "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    return ov.Core().compile_model(graph, "CPU", config)


def calibration_sample(texts: Sequence[str], size: int = CALIBRATION_SIZE) -> list[str]:
    """At most ``size`` non-empty texts taken evenly across ``texts`` (deterministic: the same corpus gives
    the same sample, hence the same cached graph)."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(texts) <= size:
        return texts
    step = len(texts) / size
    return [texts[int(i * step)] for i in range(size)]


def _calibration_key(texts: Sequence[str], max_seq_length: int | None) -> str:
    return texts_fingerprint([str(i) for i in range(len(texts))], list(texts),
                             extra={"v": EXPORT_VERSION, "seq": max_seq_length})


def export_dir(fingerprint: str) -> Path:
    return cache_dir() / "openvino" / f"{fingerprint}-v{EXPORT_VERSION}"


def export(model: Any, fingerprint: str | None = None) -> Path:
    """``model.xml`` of ``model`` converted by OpenVINO (now, or found intact in the cache), checked against
    torch on a probe batch before it is kept."""
    ov = require_openvino()
    fingerprint = fingerprint or model_fingerprint(model)
    target = export_dir(fingerprint)
    if _intact(target, "export.json"):
        return target / "model.xml"
    shutil.rmtree(target, ignore_errors=True)
    t0 = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with probe_inputs(model) as (names, args, expected), torch.no_grad():
            try:
                with _quiet():
                    graph = ov.convert_model(_Graph(model, names), example_input=args,
                                             input=[ov.PartialShape([-1, -1])] * len(names))
                    ov.save_model(graph, str(tmp / "model.xml"), compress_to_fp16=False)
            except Exception as exc:  # the converter's errors are many and deep: name the cause
                raise BackendUnavailableError(f"this model could not be converted to OpenVINO "
                                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                              "use --runtime torch") from None
        got = _compile(ov, str(tmp / "model.xml"), "fp32")([a.numpy() for a in args])[0]
        cos = float(_cosine(expected, np.asarray(got)).min())
        if not cos >= MIN_COSINE:
            raise BackendUnavailableError(f"the OpenVINO conversion does not reproduce the torch model "
                                          f"(cosine {cos:.6f} < {MIN_COSINE}); use --runtime torch")
        meta = {"fingerprint": fingerprint, "inputs": names, "torch": torch.__version__,
                "openvino": ov.__version__, "probe_cosine_min": cos,
                "seconds": round(time.perf_counter() - t0, 2)}
        _publish(tmp, target, "export.json", meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted the model to OpenVINO in %.1f s (%s; probe cosine to torch %.7f)", meta["seconds"],
                target, cos)
    return target / "model.xml"


def quantize_int8(model: Any, fp32_path: Path, calibration: Sequence[str], inputs: list[str]) -> Path:
    """``model.xml`` of the int8 graph calibrated on ``calibration`` (quantised now, or found intact in the
    cache)."""
    ov = require_openvino()
    import nncf

    key = _calibration_key(calibration, getattr(model, "max_seq_length", None))
    target = fp32_path.parent / f"int8-{key[:16]}"
    if _intact(target, "int8.json"):
        return target / "model.xml"
    shutil.rmtree(target, ignore_errors=True)

    def feed(text: str) -> list[np.ndarray]:
        features = model.preprocess([text])
        return [features[n].numpy() for n in inputs]

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=target.parent))
    try:
        # its notes are library chatter; the logger's own level only (nncf.set_log_level also sets the level
        # of every handler on that logger, which can be a host application's or pytest's)
        nncf_logger = logging.getLogger("nncf")
        level = nncf_logger.level
        nncf_logger.setLevel(logging.ERROR)
        # its rich progress bars write to stdout whatever the log level: kept out of the user's output
        silent = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
        try:
            with _quiet(), silent[0], silent[1]:
                quantized = nncf.quantize(ov.Core().read_model(str(fp32_path)),
                                          nncf.Dataset(list(calibration), feed),
                                          model_type=nncf.ModelType.TRANSFORMER,
                                          subset_size=len(calibration))
                ov.save_model(quantized, str(tmp / "model.xml"), compress_to_fp16=False)
        finally:
            nncf_logger.setLevel(level)
        _publish(tmp, target, "int8.json", {"calibration_sha256": key, "calibration_texts": len(calibration),
                                             "nncf": nncf.__version__, "openvino": ov.__version__,
                                             "seconds": round(time.perf_counter() - t0, 2)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("quantised the model to OpenVINO int8 in %.1f s, calibrated on %d of the texts being encoded",
                time.perf_counter() - t0, len(calibration))
    return target / "model.xml"


def _publish(tmp: Path, target: Path, record: str, meta: dict[str, Any]) -> None:
    """Record the graph in ``tmp`` (its files' sha256 beside ``meta``) and rename the folder to ``target``,
    unless another process finished the same graph first."""
    meta["sha256"] = {n: sha256_file(tmp / n) for n in ("model.xml", "model.bin")}
    (tmp / record).write_text(json.dumps(meta, indent=2))
    if not _intact(target, record, quiet=True):
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


def _intact(folder: Path, record: str, quiet: bool = False) -> bool:
    """Whether a cached graph is the one its record describes (sha256 of both files)."""
    if not (folder / record).is_file():
        return False
    try:
        want = json.loads((folder / record).read_text(encoding="utf-8")).get("sha256") or {}
        if all(sha256_file(folder / n) == want.get(n) for n in ("model.xml", "model.bin")):
            return True
    except (OSError, ValueError, AttributeError):
        pass
    if not quiet:
        logger.warning("%s differs from the hashes recorded when it was made: altered or damaged; making it "
                       "again", folder)
    return False


class OpenVinoEncoder(OnnxEncoder):
    """:class:`~ragcun.runtime.onnx.OnnxEncoder` with an OpenVINO compiled model in place of the ONNX Runtime
    session (tokenizing, ``max_seq_length`` and the tokenizer stay the source module's)."""

    def __init__(self, compiled: Any, inputs: list[str], source: torch.nn.Module, fingerprint: str,
                 precision: str, calibration: str | None = None) -> None:
        super().__init__(compiled, inputs, source, fingerprint, precision)
        self.calibration = calibration

    @property
    def runtime(self) -> Runtime:
        return Runtime("openvino", self.precision)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        out = self.session([features[n].detach().cpu().numpy() for n in self.inputs])[0]
        features["sentence_embedding"] = torch.from_numpy(np.array(out, dtype=np.float32))
        return features

    def get_config_dict(self) -> dict[str, Any]:
        return {"backend": "openvino", "precision": self.precision, "calibration": self.calibration,
                "source_fingerprint": self.source_fingerprint, "inputs": self.inputs}

    def get_embedding_dimension(self) -> int | None:
        shape = self.session.outputs[0].get_partial_shape()
        last = shape[shape.rank.get_length() - 1]
        return last.get_length() if last.is_static else None

    get_sentence_embedding_dimension = get_embedding_dimension


def openvino_model(model: Any, precision: str = "fp32", device: Any = None,
                   calibration: Sequence[str] | None = None) -> Any:
    """A SentenceTransformer that encodes ``model``'s way through OpenVINO at ``precision`` (fp32 | bf16 |
    int8; int8 calibrated on ``calibration``, a sample of the texts to be encoded)."""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(f"the openvino backend runs {', '.join(PRECISIONS)}, not {precision}")
    if device is not None and not str(device).startswith("cpu"):
        raise BackendUnavailableError(f"the openvino backend runs on the CPU here, not on {device}; use "
                                      "--runtime torch on a GPU")
    ov = require_openvino()
    fingerprint = model_fingerprint(model)
    path = export(model, fingerprint)
    inputs = json.loads((path.parent / "export.json").read_text())["inputs"]
    key = None
    if precision == "int8":
        sample = calibration_sample(calibration or [])
        if not sample:
            from ragcun.runtime.auto import probe_texts

            logger.warning("openvino int8 without calibration texts: calibrated on ragcun's %d built-in "
                           "probe passages, not on your corpus (give the texts to encode for a faithful "
                           "int8)", len(probe_texts()))
            sample = probe_texts()
        key = _calibration_key(sample, getattr(model, "max_seq_length", None))
        path = quantize_int8(model, path, sample, inputs)
    with _quiet():
        compiled = _compile(ov, str(path), precision)
    encoder = OpenVinoEncoder(compiled, inputs, model[0], fingerprint, precision, key)
    if precision == "bf16":  # fp32 is this very compile of the graph export() checked against torch
        _check(model, encoder, precision)
    return wrap(encoder, model)


def _check(model: Any, encoder: OpenVinoEncoder, precision: str) -> None:
    """A lossless compile reproduces torch on the probe batch, or is refused (never run silently wrong)."""
    with probe_inputs(model) as (names, args, expected):
        got = encoder.forward(dict(zip(names, args, strict=True)))["sentence_embedding"].numpy()
    cos = float(_cosine(expected, got).min())
    if not cos >= MIN_COSINE:
        raise BackendUnavailableError(f"OpenVINO {precision} does not reproduce the torch model (cosine "
                                      f"{cos:.6f} < {MIN_COSINE}); use --runtime torch")
