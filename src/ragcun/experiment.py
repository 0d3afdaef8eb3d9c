"""The three-arm ablation: baseline (λ_iso = 0), isotropy (λ_iso > 0), frozen base (head only),
plus the untouched base model as a reference — trained, evaluated, measured and reported.

One TOML file drives it. Its training keys are read by :func:`ragcun.training.load_config`;
the tables ``[experiment]``, ``[triplets]``, ``[evaluation]`` and ``[arms.<name>]`` are read here.
Every stage writes its result atomically and is skipped when that result exists, so a re-run
picks up where a killed one stopped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcun.io import write_json
from ragcun.training.config import read_toml

logger = logging.getLogger(__name__)

DEFAULT_ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"lambda_isotropy": 0.0, "freeze_base": False},
    "isotropy": {"lambda_isotropy": 1.0, "freeze_base": False},
    "frozen": {"lambda_isotropy": 1.0, "freeze_base": True},
}


class ExperimentError(ValueError):
    """The experiment config is wrong; the message names the file and the key."""


@dataclass
class ExperimentConfig:
    path: Path
    name: str
    output_dir: Path
    arms: dict[str, dict[str, Any]]
    reference: str | None
    baseline: str
    triplets: dict[str, Any]
    evaluation: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.output_dir / "data"

    def arm_dir(self, arm: str) -> Path:
        return self.output_dir / "arms" / arm

    def results_file(self, model: str) -> Path:
        return self.output_dir / "results" / f"{model}.json"

    def isotropy_file(self, model: str) -> Path:
        return self.output_dir / "isotropy" / f"{model}.json"


_EXPERIMENT_KEYS = {"name", "output_dir", "arms", "reference", "baseline"}
_EVAL_KEYS = {"datasets", "split", "batch_size", "max_seq_length", "score", "isotropy_max_docs", "isotropy_num_slices"}


def load_experiment(path: str | os.PathLike, output_dir: str | None = None) -> ExperimentConfig:
    p = Path(path)
    raw = read_toml(p, ExperimentError)
    exp = raw.get("experiment", {})
    unknown = set(exp) - _EXPERIMENT_KEYS
    if unknown:
        raise ExperimentError(f"{p}: unknown key(s) in [experiment]: {', '.join(sorted(unknown))}")
    ev = raw.get("evaluation", {})
    unknown = set(ev) - _EVAL_KEYS
    if unknown:
        raise ExperimentError(f"{p}: unknown key(s) in [evaluation]: {', '.join(sorted(unknown))}")
    if not ev.get("datasets"):
        raise ExperimentError(f"{p}: [evaluation] needs datasets = [...]")
    from ragcun.data.beir import expand_dataset_names

    ev = {**ev, "datasets": expand_dataset_names(list(ev["datasets"]))}
    arm_tables = raw.get("arms", {})
    order = exp.get("arms", list(arm_tables) or list(DEFAULT_ARMS))
    arms: dict[str, dict[str, Any]] = {}
    for arm in order:
        if arm not in arm_tables and arm not in DEFAULT_ARMS:
            raise ExperimentError(f"{p}: arm {arm!r} has no [arms.{arm}] table")
        arms[arm] = {**DEFAULT_ARMS.get(arm, {}), **arm_tables.get(arm, {})}
    baseline = exp.get("baseline", "baseline" if "baseline" in arms else order[0])
    if "sources" not in raw.get("triplets", {}):
        raise ExperimentError(f"{p}: [triplets] needs sources = [...] (BEIR names or an MS MARCO folder)")
    name = exp.get("name", p.stem)
    return ExperimentConfig(
        path=p,
        name=name,
        output_dir=Path(output_dir or exp.get("output_dir", f"runs/{name}")),
        arms=arms,
        reference=exp.get("reference", _train_value(raw, "base_model")),
        baseline=baseline,
        triplets=dict(raw["triplets"]),
        evaluation=dict(ev),
        raw=raw,
    )


def _train_value(raw: dict[str, Any], key: str) -> Any:
    if key in raw:
        return raw[key]
    for value in raw.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


# ---------------------------------------------------------------------------- stages
def prepare_data(exp: ExperimentConfig, data_dir: str | None = None) -> dict[str, Any]:
    """Build the triplets once (BM25 negatives, held-out validation)."""
    import json

    manifest = exp.data_dir / "manifest.json"
    if manifest.exists():
        logger.info("data: %s exists, reusing", exp.data_dir)
        return json.loads(manifest.read_text())
    from ragcun.data.triplets import build_triplets

    opts = dict(exp.triplets)
    sources = opts.pop("sources")
    logger.info("data: building triplets from %s", ", ".join(map(str, sources)))
    return build_triplets(sources, exp.data_dir, data_dir=data_dir, **opts)


def arm_config(exp: ExperimentConfig, arm: str, overrides: list[str] | None = None, data_dir: str | None = None):
    from ragcun.training import load_config

    cfg = load_config(exp.path, overrides)
    values = {**exp.arms[arm], "train_data": str(exp.data_dir), "output_dir": str(exp.arm_dir(arm))}
    if data_dir:
        values["data_dir"] = data_dir
    for key, value in values.items():
        if not hasattr(cfg, key):
            raise ExperimentError(f"{exp.path}: [arms.{arm}] sets unknown training key {key!r}")
        setattr(cfg, key, value)
    return cfg.validate()


def arm_done(exp: ExperimentConfig, arm: str) -> bool:
    return (exp.arm_dir(arm) / "train_summary.json").exists() and (exp.arm_dir(arm) / "best").is_dir()


def train_arm(exp: ExperimentConfig, arm: str, overrides: list[str] | None = None, data_dir: str | None = None) -> dict[str, Any]:
    import json

    if arm_done(exp, arm):
        logger.info("arm %s: finished before, skipping training", arm)
        return json.loads((exp.arm_dir(arm) / "train_summary.json").read_text())
    from ragcun.training import train

    cfg = arm_config(exp, arm, overrides, data_dir)
    cfg.resume = (exp.arm_dir(arm)).exists()  # a killed run continues from its last checkpoint
    logger.info("arm %s: training (lambda_isotropy=%s, freeze_base=%s)", arm, cfg.lambda_isotropy, cfg.freeze_base)
    return train(cfg)


def train_arms_parallel(exp: ExperimentConfig, arms: list[str], overrides: list[str], data_dir: str | None) -> None:
    """One subprocess per arm, each on its own GPU (round-robin over the visible ones)."""
    import torch

    n_gpu = torch.cuda.device_count()
    procs = []
    for i, arm in enumerate(arms):
        if arm_done(exp, arm):
            continue
        env = dict(os.environ)
        if n_gpu:
            env["CUDA_VISIBLE_DEVICES"] = str(i % n_gpu)
        cmd = [sys.executable, "-m", "ragcun", "experiment", "run", str(exp.path), "--arm", arm, "--train-only",
               "--output-dir", str(exp.output_dir)]
        for o in overrides:
            cmd += ["--set", o]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        logger.info("arm %s: launching %s", arm, " ".join(cmd))
        procs.append((arm, subprocess.Popen(cmd, env=env)))
    failed = [arm for arm, p in procs if p.wait() != 0]
    if failed:
        raise RuntimeError(f"arms failed: {', '.join(failed)} (see their logs above)")


def models_to_evaluate(exp: ExperimentConfig) -> dict[str, str]:
    models: dict[str, str] = {}
    if exp.reference:
        models["reference"] = str(exp.reference)
    for arm in exp.arms:
        models[arm] = str(exp.arm_dir(arm) / "best")
    return models


def share_base_features(exp: ExperimentConfig, models: dict[str, str], data_dir: str | None = None) -> list[str]:
    """Encode each corpus once with the shared base and derive the reference's and the frozen arms' vectors.

    The reference model is the base plus its own tail (``Normalize`` for MiniLM); a frozen arm is the
    same base (its weights are checked by fingerprint) plus its head. Both tails are cheap, so the
    corpus goes through the transformer once instead of twice, and the derived vectors are stored in
    the embedding cache where evaluation and isotropy then find them. Returns the labels served.
    """
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    from ragcun.data.beir import doc_text, load_beir
    from ragcun.evaluation.beir_eval import load_model
    from ragcun.evaluation.encode import encode_corpus, encode_texts, model_fingerprint, seed_corpus_cache

    if "reference" not in models:
        return []
    ev = exp.evaluation
    msl = ev.get("max_seq_length")
    reference, _ = load_model(models["reference"])
    body_mods = [m for m in reference if not isinstance(m, Normalize)]
    body = SentenceTransformer(modules=body_mods, device=str(reference.device))
    if msl:
        body.max_seq_length = int(msl)  # the modules are the reference's own: this sets both
    tails: dict[str, tuple[object, list]] = {"reference": (reference, [m for m in reference if isinstance(m, Normalize)])}
    for arm, opts in exp.arms.items():
        if not opts.get("freeze_base") or arm not in models or not Path(models[arm]).is_dir():
            continue
        from ragcun.modeling import IsotropicGaussianEncoder

        model, _ = load_model(models[arm])  # as evaluation loads it, so the cache keys agree
        enc = IsotropicGaussianEncoder.from_pretrained(models[arm], device=str(model.device))
        if msl:
            enc.max_seq_length = model.max_seq_length = int(msl)
        base = SentenceTransformer(modules=list(enc.base_modules), device=str(enc.device))
        if model_fingerprint(base) != model_fingerprint(body):
            logger.warning("arm %s: its base differs from the reference model; encoding it on its own", arm)
            continue
        tails[arm] = (model, list(enc.head_modules))
    if len(tails) < 2:
        return []
    batch = ev.get("batch_size", 32)
    for ds in ev["datasets"]:
        data = load_beir(ds, split=ev.get("split", "test"), data_dir=data_dir)
        corpus, name = data.corpus, data.name
        ids = list(corpus)
        texts = [doc_text(corpus[d]) for d in ids]
        logger.info("%s: encoding the corpus once with the shared base for %s", ds, ", ".join(tails))
        feats = encode_corpus(body, ids, texts, f"{name}-base", batch)
        for target, tail in tails.values():
            chunks = []
            with torch.no_grad():
                for chunk in feats.chunks:
                    x = torch.from_numpy(np.array(chunk, dtype=np.float32)).to(body.device)
                    for m in tail:
                        x = m({"sentence_embedding": x})["sentence_embedding"]
                    chunks.append(x.float().cpu().numpy())
            seed_corpus_cache(target, ids, texts, name, chunks)
        # check once that the derived vectors are what the model itself produces
        probe = texts[:4]
        for label, (target, _tail) in tails.items():
            direct = encode_texts(target, probe, "document")
            derived = np.asarray(encode_corpus(target, ids, texts, name, batch, show_progress_bar=False).chunks[0][:4])
            if not np.allclose(direct, derived, atol=1e-3 * max(1.0, float(np.abs(direct).max()))):
                raise RuntimeError(f"{label}: vectors derived from shared base features differ from direct encoding")
    return list(tails)


def evaluate_models(exp: ExperimentConfig, models: dict[str, str], data_dir: str | None = None) -> dict[str, Path]:
    """BEIR evaluation of every model (skipping finished ones), plus isotropy of its corpus embeddings."""
    from ragcun.evaluation.beir_eval import evaluate_model

    ev = exp.evaluation
    files: dict[str, Path] = {}
    for label, model in models.items():
        out = exp.results_file(label)
        files[label] = out
        if out.exists():
            logger.info("evaluate %s: %s exists, skipping", label, out)
            continue
        logger.info("evaluate %s (%s) on %s", label, model, ", ".join(ev["datasets"]))
        evaluate_model(
            model, ev["datasets"], split=ev.get("split", "test"), score=ev.get("score"),
            batch_size=ev.get("batch_size", 32), max_seq_length=ev.get("max_seq_length"), data_dir=data_dir,
            output=out, model_name=label,
        )
    return files


def measure_isotropy(exp: ExperimentConfig, models: dict[str, str], data_dir: str | None = None) -> dict[str, Path]:
    """Isotropy of every model's corpus and query embeddings per dataset, with side-by-side plots.

    The corpus vectors come from the evaluation's embedding cache, so this costs no second pass.
    """
    from ragcun.evaluation.isotropy import analyze

    ev = exp.evaluation
    files: dict[str, Path] = {}
    for ds in ev["datasets"]:
        out = exp.output_dir / "isotropy" / Path(ds).name
        files[ds] = out / "isotropy.json"
        if files[ds].exists():
            logger.info("isotropy %s: %s exists, skipping", ds, files[ds])
            continue
        logger.info("isotropy of %s on %s", ", ".join(models), ds)
        analyze(list(models.values()), ds, out_dir=out, split=ev.get("split", "test"),
                max_docs=int(ev.get("isotropy_max_docs", 0)) or None, num_slices=int(ev.get("isotropy_num_slices", 1024)),
                batch_size=ev.get("batch_size", 32), max_seq_length=ev.get("max_seq_length"), data_dir=data_dir,
                labels=list(models))
    return files


def report(exp: ExperimentConfig, result_files: dict[str, Path], isotropy_files: dict[str, Path]) -> dict[str, Any]:
    from ragcun.reporting import build_report

    baseline = exp.baseline if exp.baseline in result_files else None
    return build_report([str(p) for p in result_files.values()], exp.output_dir / "report", baseline=baseline,
                        isotropy_files=[str(p) for p in isotropy_files.values() if p.exists()])


def run_experiment(
    config: str | os.PathLike,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
    parallel: bool = False,
    train_only: bool = False,
    data_dir: str | None = None,
    output_dir: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole experiment; returns the report dict."""
    exp = load_experiment(config, output_dir)
    overrides = list(overrides or [])
    selected = arms or list(exp.arms)
    for arm in selected:
        if arm not in exp.arms:
            raise ExperimentError(f"{exp.path}: no arm {arm!r} (arms: {', '.join(exp.arms)})")
    t0 = time.perf_counter()
    exp.output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    prepare_data(exp, data_dir)
    timings["data_s"] = time.perf_counter() - t0
    if parallel and len(selected) > 1:
        train_arms_parallel(exp, selected, overrides, data_dir)
    else:
        for arm in selected:
            ta = time.perf_counter()
            train_arm(exp, arm, overrides, data_dir)
            timings[f"train_{arm}_s"] = time.perf_counter() - ta
    if train_only:
        return {}
    models = models_to_evaluate(exp)
    te = time.perf_counter()
    if not all(exp.results_file(label).exists() for label in models):
        shared = share_base_features(exp, models, data_dir)
        timings["shared_base_s"] = time.perf_counter() - te
        logger.info("corpus vectors of %s derived from one pass of the shared base", ", ".join(shared) or "no model")
    results = evaluate_models(exp, models, data_dir)
    timings["evaluate_s"] = time.perf_counter() - te
    ti = time.perf_counter()
    iso = measure_isotropy(exp, models, data_dir)
    timings["isotropy_s"] = time.perf_counter() - ti
    rep = report(exp, results, iso)
    timings["total_s"] = time.perf_counter() - t0
    write_json(exp.output_dir / "experiment_summary.json", {"name": exp.name, "config": str(exp.path), "timings": timings,
                                                             "models": models, "results": {k: str(v) for k, v in results.items()}})
    return rep
