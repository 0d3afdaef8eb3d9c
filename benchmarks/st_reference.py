"""Encode a corpus with plain sentence-transformers under one of its own backends: the reference side of
the ``backends`` suite.

It runs in whichever venv that backend installs into (``make bench-refs``): sentence-transformers' ONNX
backend needs optimum-onnx, which pins transformers < 4.58 (so sentence-transformers 5.x), and its OpenVINO
backend needs optimum-intel, which pins transformers < 5.6; ragcun's own venv has transformers 5.24.
It imports nothing from ragcun. It does what sentence-transformers' efficiency guide tells a user to do:

* torch fp32 / bf16: ``SentenceTransformer(path)``, ``.bfloat16()`` for bf16;
* onnx fp32: ``backend="onnx"`` (exported by optimum on load);
* onnx int8: ``export_dynamic_quantized_onnx_model`` with the config for this CPU (``avx512_vnni`` where the
  CPU has it, else ``avx2``), loaded by ``file_name``;
* openvino fp32: ``backend="openvino"``;
* openvino int8: ``export_static_quantized_openvino_model`` with its default configuration, calibrated on
  ``--calibration`` (the same corpus sample ragcun calibrates on; its default, GLUE SST-2, is on the Hub,
  which is out of reach here), loaded by ``file_name``.

Writes ``docs.npy``, ``queries.npy`` (float32) and ``result.json`` (passages/s, set-up seconds, versions) to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def _lines(path: str) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def _flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def load(model_dir: Path, backend: str, precision: str, calibration: str | None) -> object:
    from sentence_transformers import SentenceTransformer

    if backend == "torch":
        model = SentenceTransformer(str(model_dir), device="cpu")
        return model.bfloat16() if precision == "bf16" else model
    if precision == "fp32":
        return SentenceTransformer(str(model_dir), device="cpu", backend=backend)
    if backend == "onnx":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        config = "avx512_vnni" if "avx512_vnni" in _flags() else "avx2"
        export_dynamic_quantized_onnx_model(SentenceTransformer(str(model_dir), device="cpu", backend="onnx"),
                                            config, str(model_dir))
        return SentenceTransformer(str(model_dir), device="cpu", backend="onnx",
                                   model_kwargs={"file_name": f"onnx/model_qint8_{config}.onnx"})
    from sentence_transformers import export_static_quantized_openvino_model

    data = model_dir.parent / "calibration"
    data.mkdir(exist_ok=True)
    shutil.copy(calibration, data / "train.jsonl")
    export_static_quantized_openvino_model(
        SentenceTransformer(str(model_dir), device="cpu", backend="openvino"), None, str(model_dir),
        dataset_name=str(data), dataset_config_name="default", dataset_split="train", column_name="text")
    return SentenceTransformer(str(model_dir), device="cpu", backend="openvino",
                               model_kwargs={"file_name": "openvino/openvino_model_qint8_quantized.xml"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backend", choices=("torch", "onnx", "openvino"), required=True)
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), required=True)
    p.add_argument("--docs", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--calibration")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    import numpy as np
    import sentence_transformers
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"  # a copy: the exports are written into the model's folder
    shutil.copytree(a.model, model_dir, dirs_exist_ok=True)
    docs, queries = _lines(a.docs), _lines(a.queries)
    t0 = time.perf_counter()
    model = load(model_dir, a.backend, a.precision, a.calibration)
    setup = time.perf_counter() - t0
    model.max_seq_length = a.max_seq_length
    quiet = {"batch_size": a.batch_size, "show_progress_bar": False}
    model.encode_document(docs[:a.batch_size], **quiet)  # warm-up
    speeds, emb = [], None
    for _ in range(a.reps):
        t = time.perf_counter()
        emb = model.encode_document(docs, convert_to_numpy=True, **quiet)
        speeds.append(len(docs) / (time.perf_counter() - t))
        print(f"  {speeds[-1]:.1f} passages/s", flush=True)
    q = model.encode_query(queries, convert_to_numpy=True, **quiet)
    np.save(out / "docs.npy", np.asarray(emb, dtype=np.float32))
    np.save(out / "queries.npy", np.asarray(q, dtype=np.float32))
    versions = {"sentence-transformers": sentence_transformers.__version__, "torch": torch.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformers", "optimum", "optimum-onnx", "optimum-intel", "onnxruntime", "openvino",
                 "nncf"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    (out / "result.json").write_text(json.dumps({"passages_per_s": speeds, "setup_seconds": round(setup, 1),
                                                 "versions": versions}, indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
