"""The references a SIGReg-trained head has to beat: the untouched base, whitened after the fact, and its
training-free corrections.

For each power p of the ``[whitening]`` table the base model gets a linear head computing the tempered
whitening of :func:`ragcun.modeling.head_init.whitening_map` (p = 0: the base's own geometry, centred;
p = 1: fully whitened), **fitted on the base's features of the training documents** — the triplets'
positive and negative columns, never the test corpus — and is saved as an ordinary ragcun model
(``<output_dir>/whitening/p<p>/``) that the experiment evaluates by L2 and measures like every arm. Across
p the points draw the curve of isotropy bought by linear whitening against the NDCG@10 it costs; an arm
is worth its training where it sits above that curve at its own isotropy. Beside it, the corrections of
arXiv 2511.11041 that need no training either: the base centred on the training documents' mean, and also
with its top principal direction removed (``<output_dir>/whitening/center``, ``center-pc1``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ragcun.experiment.config import ExperimentConfig, arm_config
from ragcun.fingerprint import texts_fingerprint

logger = logging.getLogger(__name__)


def whitening_label(power: float) -> str:
    """The label of the base whitened at ``power`` in every table, result file and figure."""
    return f"whiten-p{power:g}"


def whitening_dir(exp: ExperimentConfig, power: float) -> Path:
    return exp.output_dir / "whitening" / f"p{power:g}"


#: the training-free corrections (arXiv 2511.11041): label -> how many top principal directions go
CORRECTIONS = {"center": 0, "center-pc1": 1}


def correction_dir(exp: ExperimentConfig, label: str) -> Path:
    return exp.output_dir / "whitening" / label


def correction_map(features: Any, removed: int) -> tuple[Any, Any, dict[str, Any]]:
    """``(W, b)`` with ``W x + b = P(x − μ)``: the features centred on their mean μ, their top ``removed``
    principal directions projected out (``P = I − U Uᵀ``; "all but the top", Mu & Viswanath 2018)."""
    import torch

    x = features.detach().to(dtype=torch.float64)
    mean = x.mean(0)
    dim = x.shape[1]
    proj = torch.eye(dim, dtype=torch.float64)
    top: list[float] = []
    if removed:
        _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
        u = vt[:removed].T
        proj = proj - u @ u.T
        top = (sv[:removed] ** 2 / (sv**2).sum()).tolist()
    return proj.float(), (-proj @ mean).float(), {"removed_directions": removed,
                                                   "variance_removed": top, "dim": dim}


def build_corrections(exp: ExperimentConfig, enc: Any, features: Any, fit: dict[str, Any]
                      ) -> dict[str, Path]:
    """Save the base with each training-free correction as a linear head as wide as the base (so nothing
    else changes); returns label -> model dir."""
    from ragcun.modeling.head_init import affine_start

    dirs = {label: correction_dir(exp, label) for label in CORRECTIONS}
    for label, removed in CORRECTIONS.items():
        if (dirs[label] / "ragcun_config.json").is_file():
            continue
        weight, bias, info = correction_map(features, removed)
        affine_start(enc.head_modules, weight, bias)
        enc.ragcun_config["head_init"] = {**info, "method": "correction", "fit": fit}
        enc.ragcun_config["run"] = {"name": f"{exp.name}/{label}", "experiment": exp.name, "arm": label}
        enc.save(dirs[label])
        how = f", its top {removed} principal direction(s) removed" if removed else ""
        logger.info("%s: the base centred%s on %d training documents: %s", label, how, fit["documents"],
                    dirs[label])
    return dirs


def training_documents(exp: ExperimentConfig, limit: int, prompts: dict[str, str]) -> list[str]:
    """The distinct training documents (positive and negative columns, prompts applied), at most ``limit``."""
    from ragcun.training.data import calibration_texts, load_train_dataset

    train_ds, _ = load_train_dataset(exp.data_dir)
    return calibration_texts(train_ds, limit, documents_only=True, prompts=prompts)


def build_whitening(exp: ExperimentConfig, data_dir: str | None = None) -> dict[float, Path]:
    """Fit and save one whitened base per power (those saved before are kept); returns power -> model dir."""
    wh = exp.whitening
    dirs = {float(p): whitening_dir(exp, p) for p in wh.powers}
    todo = [p for p, d in dirs.items() if not (d / "ragcun_config.json").is_file()]
    corrections = [c for c in CORRECTIONS if not (correction_dir(exp, c) / "ragcun_config.json").is_file()]
    if not todo and not (wh.corrections and corrections):
        return dirs
    import torch

    from ragcun.encoding.features import cached_base_features
    from ragcun.modeling import IsotropicGaussianEncoder
    from ragcun.training.data import column_prompts

    cfg = arm_config(exp, next(iter(exp.arms)), data_dir=data_dir)
    dim = wh.output_dim or cfg.output_dim
    enc = IsotropicGaussianEncoder(base_model=cfg.base_model, output_dim=dim, head="linear",
                                   normalize_base=cfg.normalize_base, max_seq_length=cfg.max_seq_length,
                                   device="cpu")
    prompts = column_prompts(enc, ["query", "positive"])
    docs = training_documents(exp, wh.max_documents, prompts)
    table, _ = cached_base_features(enc, enc.base_modules, docs, enc.max_seq_length,
                                    batch_size=cfg.feature_batch_size, show_progress=False)
    features = torch.from_numpy(table)
    fit: dict[str, Any] = {"on": "training documents", "documents": len(docs),
                           "texts_fingerprint": texts_fingerprint([str(i) for i in range(len(docs))], docs)}
    if wh.corrections and corrections:
        base_dim = int(features.shape[1])
        wide = IsotropicGaussianEncoder(base_model=cfg.base_model, output_dim=base_dim, head="linear",
                                        normalize_base=cfg.normalize_base, max_seq_length=cfg.max_seq_length,
                                        device="cpu")
        build_corrections(exp, wide, features, fit)
    for p in todo:
        info = enc.warm_start_head(features, power=p, kind=wh.kind)
        enc.ragcun_config["head_init"] = {**info, "method": "whitening", "fit": fit}
        enc.ragcun_config["run"] = {"name": f"{exp.name}/{whitening_label(p)}", "experiment": exp.name,
                                    "arm": whitening_label(p), "base_model": cfg.base_model}
        enc.save(dirs[p])
        logger.info("whitening p=%g (%s, %d-d) fitted on %d training documents: %s", p, wh.kind, dim,
                    len(docs), dirs[p])
    return dirs
