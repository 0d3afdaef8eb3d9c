"""The ONNX Runtime backend: a whole sentence-transformers model as one ONNX graph, fp32 or int8.

Why export the whole model: the graph takes the tokenizer's tensors and returns the sentence
embedding, so pooling, normalisation and the Gaussian head run inside ONNX Runtime too; what stays in
Python is sentence-transformers' own tokenising, length sorting and batching (:class:`OnnxEncoder` is
an ordinary first module). ``optimum``'s exporter is not used: optimum-onnx pins transformers < 4.58,
and ragcun needs transformers 5; ``torch.onnx.export`` is the field's exporter underneath it anyway.

Cache: ``<cache>/onnx/<model fingerprint>/model.onnx`` (+ ``model.int8.onnx``), written atomically,
keyed by :func:`ragcun.fingerprint.model_fingerprint`, so a retrained or edited model gets a new
export and an unchanged one is exported once. Each export is checked against torch on a probe batch
before it is kept, and its sha256 recorded: a cached graph that no longer matches it (altered, damaged)
is made again on use, never run. int8 is ONNX Runtime's dynamic quantisation with per-output-channel int8
weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ragcun.files import sha256_file, write_json
from ragcun.fingerprint import model_fingerprint
from ragcun.paths import cache_dir
from ragcun.runtime.spec import BackendUnavailableError, Runtime, require_onnxruntime

logger = logging.getLogger(__name__)

OPSET = 17
EXPORT_VERSION = 2  # bump when the export recipe changes: old exports are then ignored (2: hash-checked)
#: The torch-vs-ONNX agreement an export must reach on its probe batch to be kept.
EXPORT_MIN_COSINE = 0.9999
_PROBE = ["A probe sentence for the exporter.",
          "A second, somewhat longer probe sentence, so that the batch has padding in it and varied lengths."]


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's and quantizer's warnings (tracer notes, 'consider pre-processing')."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _input_names(model: Any) -> list[str]:
    features = model.preprocess(_PROBE)
    return [k for k, v in features.items() if isinstance(v, torch.Tensor) and not v.is_floating_point()]


class _Graph(torch.nn.Module):
    """The traced function: tokenizer tensors in (positional), sentence embedding out."""

    def __init__(self, model: Any, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))["sentence_embedding"]


@contextlib.contextmanager
def probe_inputs(model: Any) -> Iterator[tuple[list[str], tuple[torch.Tensor, ...], np.ndarray]]:
    """``model`` in eval mode on the CPU with the probe batch: ``(input names, input tensors, torch's
    sentence embeddings)``, what an exporter traces with and checks against; the model is put back after."""
    names = _input_names(model)
    was_training, device = model.training, next(model.parameters()).device
    model.eval().to("cpu")
    try:
        features = model.preprocess(_PROBE)
        args = tuple(features[n] for n in names)
        with torch.no_grad():
            expected = _Graph(model, names)(*args).float().numpy()
        yield names, args, expected
    finally:
        model.to(device).train(was_training)


def export_dir(fingerprint: str) -> Path:
    return cache_dir() / "onnx" / f"{fingerprint}-v{EXPORT_VERSION}"


def export(model: Any, fingerprint: str | None = None) -> Path:
    """The fp32 ONNX file of ``model`` (exported now, or found in the cache): ``<dir>/model.onnx``."""
    ort = require_onnxruntime()
    fingerprint = fingerprint or model_fingerprint(model)
    target = export_dir(fingerprint)
    if (target / "model.onnx").is_file() and (target / "export.json").is_file():
        if _intact(target / "model.onnx", target / "export.json"):
            return target / "model.onnx"
        shutil.rmtree(target, ignore_errors=True)  # exported again below, and checked against torch again
    t0 = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        with probe_inputs(model) as (names, args, expected), torch.no_grad():
            dims = {n: {0: "batch", 1: "tokens"} for n in names} | {"sentence_embedding": {0: "batch"}}
            try:
                with _quiet():
                    torch.onnx.export(_Graph(model, names), args, str(tmp / "model.onnx"), input_names=names,
                                      output_names=["sentence_embedding"], dynamic_axes=dims,
                                      opset_version=OPSET, dynamo=False)
            except Exception as exc:  # the exporter's errors are many and deep: name the model and the cause
                raise BackendUnavailableError(f"this model could not be exported to ONNX "
                                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                              "use --backend torch") from None
        session = _session(ort, tmp / "model.onnx", "cpu")
        got = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
        cos = float(_cosine(expected, got).min())
        if not cos >= EXPORT_MIN_COSINE:
            raise BackendUnavailableError(f"the ONNX export does not reproduce the torch model (cosine "
                                          f"{cos:.6f} < {EXPORT_MIN_COSINE}); use --backend torch")
        meta = {"fingerprint": fingerprint, "inputs": names, "opset": OPSET, "torch": torch.__version__,
                "onnxruntime": ort.__version__, "probe_cosine_min": cos,
                "seconds": round(time.perf_counter() - t0, 2), "sha256": sha256_file(tmp / "model.onnx")}
        (tmp / "export.json").write_text(json.dumps(meta, indent=2))
        if not (target / "export.json").is_file():  # else another process (a torchrun rank) finished it first
            if target.exists():  # a half-written folder from an interrupted run
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported the model to ONNX in %.1f s (%s; probe cosine to torch %.7f)",
                meta["seconds"], target, cos)
    return target / "model.onnx"


def _intact(path: Path, record: Path) -> bool:
    """Whether a cached graph is the one its record describes (sha256); a changed one is logged and redone."""
    try:
        want = json.loads(record.read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError):
        want = None
    if want is not None and sha256_file(path) == want:
        return True
    logger.warning("%s differs from the hash recorded when it was made (%s): altered or damaged; making it "
                   "again", path, record.name)
    return False


def quantize_int8(fp32_path: Path) -> Path:
    """``model.int8.onnx`` beside ``fp32_path``: int8 weights per output channel, dynamic int8 activations."""
    require_onnxruntime()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = fp32_path.with_name("model.int8.onnx")
    record = out.with_name("int8.json")
    if out.is_file() and record.is_file() and _intact(out, record):
        return out
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with _quiet():
            quantize_dynamic(str(fp32_path), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        write_json(record, {"sha256": sha256_file(tmp)})  # first: a file without its record is redone
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("quantised the ONNX graph to int8 in %.1f s (%s)", time.perf_counter() - t0, out.name)
    return out


def _providers(ort: Any, device: Any) -> list[str]:
    if str(device or "cpu").startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning("device %s asked for, but this onnxruntime has no CUDA provider (pip install "
                       "onnxruntime-gpu): ONNX Runtime runs on the CPU", device)
    return ["CPUExecutionProvider"]


def _session(ort: Any, path: Path, device: Any) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=_providers(ort, device))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


class OnnxEncoder(torch.nn.Module):
    """A sentence-transformers first module that runs the whole model in ONNX Runtime.

    Tokenizing (``preprocess``), ``max_seq_length`` and the tokenizer are the original first module's;
    ``forward`` feeds its tensors to the session and returns ``sentence_embedding``. The original
    module is held unregistered, so this module has no tensors of its own: its fingerprint is its
    config (the source model's fingerprint, the precision), plus the model's ``max_seq_length``.
    """

    def __init__(self, session: Any, inputs: list[str], source: torch.nn.Module, fingerprint: str,
                 precision: str) -> None:
        super().__init__()
        self.session, self.inputs, self.precision, self.source_fingerprint = (
            session, inputs, precision, fingerprint)
        object.__setattr__(self, "_source", source)  # not a submodule: no duplicate weights in state_dict

    @property
    def runtime(self) -> Runtime:
        return Runtime("onnx", self.precision)

    def preprocess(self, inputs: Any, prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        try:
            return self._source.preprocess(inputs, prompt=prompt, **kwargs)
        except TypeError:
            return self._source.preprocess([prompt + t for t in inputs] if prompt else inputs, **kwargs)

    def tokenize(self, texts: Any, **kwargs: Any) -> dict[str, Any]:
        return self.preprocess(texts, **kwargs)

    @property
    def tokenizer(self) -> Any:
        return self._source.tokenizer

    @property
    def auto_model(self) -> Any:  # its config gives the position limit (set_max_seq_length checks it)
        return self._source.auto_model

    @property
    def modalities(self) -> list:
        return getattr(self._source, "modalities", ["text"])

    @property
    def max_seq_length(self) -> int | None:
        return self._source.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self._source.max_seq_length = value

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        feed = {n: features[n].detach().cpu().numpy() for n in self.inputs}
        out = self.session.run(None, feed)[0]
        features["sentence_embedding"] = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        return features

    def get_config_dict(self) -> dict[str, Any]:
        return {"backend": "onnx", "precision": self.precision, "source_fingerprint": self.source_fingerprint,
                "export_version": EXPORT_VERSION, "inputs": self.inputs}

    def get_embedding_dimension(self) -> int | None:
        shape = self.session.get_outputs()[0].shape
        return shape[-1] if isinstance(shape[-1], int) else None

    # the name sentence-transformers < 6.1 asks for
    get_sentence_embedding_dimension = get_embedding_dimension

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise BackendUnavailableError("an ONNX-backed model is not saved as a model: save the torch model "
                                      "it came from")


def onnx_model(model: Any, precision: str = "fp32", device: Any = None) -> Any:
    """A SentenceTransformer that encodes ``model``'s way through ONNX Runtime at ``precision``
    (fp32 | int8)."""
    if precision not in ("fp32", "int8"):
        raise BackendUnavailableError(f"the onnx backend runs fp32 or int8, not {precision}")
    ort = require_onnxruntime()
    fingerprint = model_fingerprint(model)
    path = export(model, fingerprint)
    if precision == "int8":
        path = quantize_int8(path)
    inputs = json.loads((path.parent / "export.json").read_text())["inputs"]
    return wrap(OnnxEncoder(_session(ort, path, device), inputs, model[0], fingerprint, precision), model)


def wrap(encoder: OnnxEncoder, model: Any) -> Any:
    """A SentenceTransformer around a graph-running first module that prompts, scores and describes itself as
    ``model`` does (its prompts, similarity function and model card)."""
    from sentence_transformers import SentenceTransformer

    wrapped = SentenceTransformer(modules=[encoder], device="cpu")
    for attr in ("prompts", "default_prompt_name", "similarity_fn_name"):
        value = getattr(model, attr, None)
        setattr(wrapped, attr, dict(value) if isinstance(value, dict) else value)
    card = getattr(model, "model_card_data", None)
    if card is not None:
        wrapped.model_card_data = card
    return wrapped
