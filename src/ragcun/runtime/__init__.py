"""Which runtime encodes: a backend (``torch`` | ``onnx`` | ``openvino``) and a precision (``fp32`` |
``bf16`` | ``int8``).

Every encoding path (``evaluate``, ``isotropy``, ``evaluate-rag``, ``index build``,
:class:`~ragcun.retrieval.GaussianRetriever`, the experiment's ``[evaluation]``) takes the same two
choices and goes through :func:`prepare_model`, which returns a model with the usual
``SentenceTransformer.encode`` API: sentence-transformers still tokenizes, sorts by length and batches.

=========  ======  =================================================================================
backend    prec.   what runs
=========  ======  =================================================================================
torch      fp32    the model as loaded (the reference)
torch      bf16    the model cast to bfloat16 (fast where the hardware has bf16 units: recent GPUs,
                   CPUs with AVX-512 BF16 / AMX; emulated, hence slow, elsewhere)
onnx       fp32    the whole model, Gaussian head included, exported to ONNX and run by ONNX Runtime
onnx       int8    that graph with int8 weights (per output channel) and dynamically quantised
                   activations (:mod:`onnxruntime.quantization`)
openvino   fp32    the whole model converted by OpenVINO's PyTorch frontend, compiled for the CPU
                   (:mod:`ragcun.runtime.openvino`)
openvino   bf16    with OpenVINO's bf16 inference precision (checked against torch like fp32)
openvino   int8    statically quantised by NNCF, calibrated on a sample of the corpus being encoded
=========  ======  =================================================================================

``auto`` resolves by measurement (``benchmarks/suites/backends.py``; docs/performance.md): on a CPU with
bf16 units (AVX-512 BF16, AMX) the lossless runtimes are timed on the model itself once and the fastest
that keeps cosine ≥ 0.9999 to fp32 is used (:mod:`ragcun.runtime.auto`, cached per CPU and model); where
labelled data are at hand (``ragcun evaluate``) and the CPU has int8 units (VNNI, AMX), OpenVINO int8 is
taken instead if it is faster and loses at most 0.5 NDCG@10 on a slice of that data
(:mod:`ragcun.evaluation.runtime_check`). On a CPU without bf16 units torch fp32, where neither ONNX Runtime
nor OpenVINO fp32 measured faster and emulated bf16 is 4× slower; bf16 on a CUDA GPU that supports it (the
field's practice; not measured on this project's CPU machines). ``backend="auto"`` means onnx for int8,
torch otherwise. Exported graphs are cached by the model's fingerprint (:mod:`ragcun.runtime.onnx`,
:mod:`ragcun.runtime.openvino`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from ragcun.runtime.spec import (
    BACKENDS,
    CPU_BATCH_SIZE,
    GPU_BATCH_SIZE,
    MEASURE_ENV,
    MEASURED,
    PRECISIONS,
    BackendUnavailableError,
    Runtime,
    check_device,
    cpu_has_bf16,
    cpu_has_int8,
    cpu_info,
    default_batch_size,
    is_asymmetric,
    on_gpu,
    require_onnxruntime,
    require_openvino,
    resolve_runtime,
    runtime_of,
)

__all__ = ["BACKENDS", "CPU_BATCH_SIZE", "GPU_BATCH_SIZE", "MEASURE_ENV", "MEASURED", "PRECISIONS",
           "BackendUnavailableError", "Runtime", "check_device", "cpu_has_bf16", "cpu_has_int8", "cpu_info",
           "default_batch_size", "on_gpu", "require_onnxruntime", "require_openvino", "resolve_runtime",
           "runtime_of", "prepare_model"]

logger = logging.getLogger(__name__)


def prepare_model(model: Any, runtime: Runtime, device: Any = None, owned: bool = True,
                  calibration: Sequence[str] | None = None, check: Any = None) -> Any:
    """The model to encode with under ``runtime`` (``model`` itself for torch fp32).

    ``owned=False`` (a model the caller passed in and keeps using) copies before casting to bf16.
    ``calibration``: texts of the corpus about to be encoded, the sample OpenVINO's static int8 is
    calibrated on (:mod:`ragcun.runtime.openvino`); the other runtimes do not read it. ``check``: labelled
    data (:class:`ragcun.runtime.auto.LabelledCheck`) that lets ``auto`` consider that int8.
    """
    current = runtime_of(model)
    if is_asymmetric(model) and runtime.backend in ("onnx", "openvino"):
        raise BackendUnavailableError(f"{runtime.backend} exports one graph, and this model routes queries "
                                      "and documents through different encoders (a query tower); use "
                                      "--backend torch")
    if is_asymmetric(model) and runtime.is_measured:  # auto: of the exporting runtimes none applies
        runtime = Runtime("torch", "fp32")
    if runtime.is_measured:
        if not current.is_reference:  # already prepared: auto keeps what it runs
            return model
        from ragcun.runtime.auto import choose

        runtime = choose(model, default_batch_size(device), prepare=prepare_model, check=check)
        if runtime.precision == "int8" and check is not None:
            calibration = check.calibration
    if current == runtime:  # already prepared (or torch fp32 asked of a torch fp32 model)
        return model
    if not current.is_reference:
        raise BackendUnavailableError(f"this model already encodes with {current.tag}: give the torch fp32 "
                                      f"model it came from to run it with {runtime.tag}")
    if (runtime.precision == "bf16" and not on_gpu(device or getattr(model, "device", None))
            and not cpu_has_bf16()):
        logger.warning("bf16 on a CPU without bf16 instructions (no avx512_bf16/amx_bf16 in /proc/cpuinfo) "
                       "runs emulated: torch bf16 measured 4x slower than fp32 on such a CPU")
    if runtime.backend == "torch":  # bf16
        import torch

        target = model if owned else copy.deepcopy(model)
        return target.to(torch.bfloat16)
    if runtime.backend == "openvino":
        from ragcun.runtime.openvino import openvino_model

        return openvino_model(model, runtime.precision, device=device, calibration=calibration)
    from ragcun.runtime.onnx import onnx_model

    return onnx_model(model, runtime.precision, device=device)
