"""The runtime choices themselves: a backend and a precision (:class:`Runtime`), checked and resolved
(:func:`resolve_runtime`), the devices and CPU features they depend on, and what runtime a model runs under
(:func:`runtime_of`). :mod:`ragcun.runtime` turns a choice into a model
(:func:`ragcun.runtime.prepare_model`)."""


from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: The encoding batch size where none is given: on the 2-core CPU batch 16 measured 10–13 % faster than
#: 32 and 64 with the same vectors (benchmarks/results/full/encode.json); GPUs want larger batches.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 128
#: ``RAGCUN_AUTO_MEASURE=0`` makes ``auto`` torch fp32 on every CPU (no probe): reproducible figures across
#: CPU kinds.
MEASURE_ENV = "RAGCUN_AUTO_MEASURE"


class BackendUnavailableError(ImportError):
    """The requested backend cannot run here (its package is missing, or the combination is unsupported)."""


@dataclass(frozen=True)
class Runtime:
    """A resolved (backend, precision) pair."""

    backend: str = "torch"
    precision: str = "fp32"

    @property
    def tag(self) -> str:
        return f"{self.backend}-{self.precision}"

    @property
    def is_reference(self) -> bool:
        return self.backend == "torch" and self.precision == "fp32"

    @property
    def needs_calibration(self) -> bool:
        """Built from a sample of the texts it will encode (OpenVINO's static int8)."""
        return self.backend == "openvino" and self.precision == "int8"

    @property
    def is_measured(self) -> bool:
        """Still to be chosen on the model by :func:`prepare_model` (``auto`` on a CPU with bf16 units)."""
        return self.backend == "auto"


#: ``auto`` where the choice needs the model: measured by :func:`ragcun.runtime.auto.choose`.
MEASURED = Runtime("auto", "auto")


def on_gpu(device: Any = None) -> bool:
    """Whether ``device`` (None: where sentence-transformers would put a model, a GPU when there is one) is
    CUDA."""
    if device is not None:
        return str(device).startswith("cuda")
    import torch

    return torch.cuda.is_available()


def check_device(device: Any, what: str = "device") -> str | None:
    """``device`` checked against what this machine has (None: sentence-transformers' choice, a GPU if any).

    An unknown name or a device that is not here is a one-line ``ValueError`` naming ``what`` (the CLI
    passes ``--device``) and what is available, before any model loads.
    """
    if device is None:
        return None
    import torch

    name = str(device).strip().lower()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    available = ", ".join(["cpu"] + ([f"cuda:0 … cuda:{cuda - 1}" if cuda > 1 else "cuda"] if cuda else [])
                          + (["mps"] if mps else []))
    kind, _, index = name.partition(":")
    if kind == "cpu" and not index:
        return "cpu"
    if kind == "cuda" and (not index or index.isdigit()):
        if not cuda:
            raise ValueError(f"{what} {device}: no CUDA GPU is visible to torch here (available: "
                             f"{available})")
        if index and int(index) >= cuda:
            raise ValueError(f"{what} {device}: this machine has {cuda} CUDA GPU(s) (available: {available})")
        return name
    if kind == "mps" and not index:
        if not mps:
            raise ValueError(f"{what} {device}: Apple MPS is not available here (available: {available})")
        return name
    raise ValueError(f"{what} {device!r} is not a device (available: {available})")


def default_batch_size(device: Any = None) -> int:
    """The measured default encoding batch size for ``device`` (a string, torch.device, or None = the
    default)."""
    return GPU_BATCH_SIZE if on_gpu(device) else CPU_BATCH_SIZE


def cpu_info() -> tuple[str | None, set[str]]:
    """This CPU's model name and feature flags, from /proc/cpuinfo (``(None, set())`` where there is none)."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, flags


def cpu_has_bf16(cpu: tuple[str | None, set[str]] | None = None) -> bool:
    """Whether this CPU (or ``cpu``, a :func:`cpu_info` result) has native bfloat16 arithmetic (AVX-512 BF16
    or AMX)."""
    return bool((cpu if cpu is not None else cpu_info())[1] & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8(cpu: tuple[str | None, set[str]] | None = None) -> bool:
    """Whether this CPU has int8 dot-product units (VNNI or AMX), where int8 inference gains (on AVX2 an int8
    product takes two instructions and measured 1.47×, not worth a lossy runtime in ``auto``)."""
    return bool((cpu if cpu is not None else cpu_info())[1] & {"avx512_vnni", "avx_vnni", "amx_int8"})


def resolve_runtime(backend: str | None = "auto", precision: str | None = "auto",
                    device: Any = None) -> Runtime:
    """Check ``backend``/``precision`` (``auto`` or ``None`` = the measured default) and resolve them."""
    b = "auto" if backend is None else str(backend).lower()
    p = "auto" if precision is None else str(precision).lower()
    if b not in (*BACKENDS, "auto"):
        raise ValueError(f"the encoding runtime must be auto, {', '.join(BACKENDS)} (got {backend!r})")
    if p not in (*PRECISIONS, "auto"):
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)} (got {precision!r})")
    if (p == "auto" and b == "auto" and not on_gpu(device) and cpu_has_bf16()
            and os.environ.get(MEASURE_ENV, "1") != "0"):
        return MEASURED
    if p == "auto":
        if b in ("onnx", "openvino"):
            p = "fp32"
        else:
            import torch

            p = ("bf16" if on_gpu(device) and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                 else "fp32")
    if b == "auto":
        b = "onnx" if p == "int8" else "torch"
    if b == "onnx" and p == "bf16":
        raise BackendUnavailableError(
            "precision bf16 runs on the torch backend (ONNX Runtime has no bf16 CPU kernels); "
            "use --runtime torch|openvino --precision bf16, or --runtime onnx --precision fp32|int8")
    if b == "torch" and p == "int8":
        raise BackendUnavailableError(
            "precision int8 runs on the onnx runtime (dynamic int8 in ONNX Runtime) or the openvino runtime "
            "(static int8, calibrated on the corpus); use --runtime onnx|openvino --precision int8")
    if b == "openvino" and on_gpu(device) and device is not None:
        raise BackendUnavailableError(f"the openvino runtime runs on the CPU here, not on {device}; use "
                                      "--runtime torch on a GPU")
    if b == "onnx":
        require_onnxruntime()
    if b == "openvino":
        require_openvino()
    return Runtime(b, p)


def is_asymmetric(model: Any) -> bool:
    """Whether ``model`` routes queries and documents through different modules (a sentence-transformers
    ``Router``: a query tower beside a document encoder), which one exported graph cannot hold."""
    from sentence_transformers.base.modules import Router

    try:
        return any(isinstance(m, Router) for m in model)
    except TypeError:
        return False


def runtime_of(model: Any) -> Runtime:
    """The runtime a prepared model runs under (for results and manifests)."""
    first = model[0] if hasattr(model, "__getitem__") else None
    tag = getattr(first, "runtime", None)
    if isinstance(tag, Runtime):
        return tag
    import torch

    try:
        dtype = next(model.parameters()).dtype
    except (StopIteration, AttributeError, TypeError):
        return Runtime()
    return Runtime("torch", "bf16" if dtype == torch.bfloat16 else "fp32")


def _require(what: str, extra: str, *modules: str) -> Any:
    """The last of ``modules`` imported, or a one-line error saying which is missing and how to install it."""
    import importlib

    try:
        return [importlib.import_module(m) for m in modules][-1]
    except ImportError as exc:
        raise BackendUnavailableError(f"{what} needs {' and '.join(reversed(modules))} ({exc.name} is "
                                      f"missing): pip install 'ragcun[{extra}]'") from None


def require_onnxruntime() -> Any:
    """ONNX Runtime (with onnx, its exporter's format), or a clear error saying how to install it."""
    return _require("the onnx backend", "onnx", "onnx", "onnxruntime")


def require_openvino() -> Any:
    """OpenVINO (with NNCF, its quantiser), or a clear error saying how to install them."""
    return _require("the openvino runtime", "openvino", "nncf", "openvino")
