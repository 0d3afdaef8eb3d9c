"""The three-arm ablation: baseline (λ_iso = 0), isotropy (λ_iso > 0), frozen base (head only),
plus the untouched base model as a reference — trained, evaluated, measured and reported.

This module only orchestrates: triplets come from :mod:`ragcun.data.triplets`, training from
:mod:`ragcun.training`, vectors, metrics and isotropy from :mod:`ragcun.evaluation`, tables from
:mod:`ragcun.reporting`. Every stage writes its result atomically and is skipped when that result
exists, so a re-run picks up where a killed one stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcun.experiment.config import ExperimentConfig, ExperimentError, arm_config, load_experiment
from ragcun.io import write_json

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data and training
def prepare_data(exp: ExperimentConfig, data_dir: str | None = None) -> dict[str, Any]:
    """Build the triplets once (BM25 negatives, held-out validation)."""
    manifest = exp.data_dir / "manifest.json"
    if manifest.exists():
        logger.info("data: %s exists, reusing", exp.data_dir)
        return json.loads(manifest.read_text())
    from ragcun.data.triplets import build_triplets

    opts = dataclasses.asdict(exp.triplets)
    sources = opts.pop("sources")
    logger.info("data: building triplets from %s", ", ".join(map(str, sources)))
    return build_triplets(sources, exp.data_dir, data_dir=data_dir, show_progress=False, **opts)


def arm_done(directory: Path) -> bool:
    return (directory / "train_summary.json").exists() and (directory / "best").is_dir()


def train_arm(exp: ExperimentConfig, arm: str, overrides: list[str] | None = None, data_dir: str | None = None,
              output_dir: Path | None = None, **changes: Any) -> dict[str, Any]:
    out = output_dir or exp.arm_dir(arm)
    if arm_done(out):
        logger.info("arm %s: finished before, skipping training", out.name)
        return json.loads((out / "train_summary.json").read_text())
    from ragcun.training import train

    cfg = arm_config(exp, arm, overrides, data_dir, out, **changes)
    cfg.resume = out.exists()  # a killed run continues from its last checkpoint
    logger.info("arm %s: training (lambda_isotropy=%s, freeze_base=%s)", out.name, cfg.lambda_isotropy, cfg.freeze_base)
    return train(cfg)


def _train_arm_process(config: str, output_dir: str, arm: str, overrides: list[str], data_dir: str | None,
                       gpu: int | None) -> None:
    """One arm, in a fresh interpreter (spawned): its GPU chosen before anything touches CUDA."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import logging as _logging

    _logging.basicConfig(level=_logging.INFO, format=f"[arm {arm}] %(message)s", force=True)  # env (quiet libs) inherited
    exp = load_experiment(config, output_dir=output_dir)
    train_arm(exp, arm, overrides, data_dir)


def train_arms_parallel(exp: ExperimentConfig, arms: list[str], overrides: list[str], data_dir: str | None) -> None:
    """One spawned process per arm, each on its own GPU (round-robin over the visible ones), running
    :func:`train_arm` itself: the same code path as a sequential run, without a command line in between."""
    import multiprocessing as mp

    import torch

    n_gpu = torch.cuda.device_count()
    ctx = mp.get_context("spawn")  # CUDA cannot be forked; each arm gets a clean interpreter
    procs = []
    for i, arm in enumerate(arms):
        if arm_done(exp.arm_dir(arm)):
            continue
        gpu = i % n_gpu if n_gpu else None
        logger.info("arm %s: training in its own process%s", arm, f" on GPU {gpu}" if gpu is not None else "")
        proc = ctx.Process(target=_train_arm_process, name=f"ragcun-arm-{arm}",
                           args=(str(exp.path), str(exp.output_dir), arm, list(overrides), data_dir, gpu))
        proc.start()
        procs.append((arm, proc))
    for _, proc in procs:
        proc.join()
    failed = [arm for arm, proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"arms failed: {', '.join(failed)} (see their logs above)")


# ---------------------------------------------------------------------------- what is evaluated
@dataclass(frozen=True)
class View:
    """One thing to evaluate: a model (or the base inside it) ranked by one score."""

    label: str  # file name and table label
    model: str  # model directory or alias
    score: str  # l2 | cos
    part: str = "model"  # "model": the whole model; "base": the base only (the embedding before the head)
    description: str = ""
    role: str = "arm"  # reference | arm | view (an arm seen another way) | whitening (the post-hoc reference)

    @property
    def measured(self) -> bool:
        """Whether this view's embeddings are measured for isotropy (each model once, as it ranks)."""
        return self.role in ("reference", "arm", "whitening")


def describe_arm(exp: ExperimentConfig, arm: str) -> str:
    from ragcun.training import load_config

    cfg = load_config(exp.path).replace(**exp.arms[arm])  # the file's keys under the arm's table, as it trains
    what = "head only" if cfg.freeze_base else "full fine-tuning"
    return f"λ_iso = {cfg.lambda_isotropy:g}, {what}"


def evaluation_views(exp: ExperimentConfig, arms: dict[str, Path] | None = None) -> list[View]:
    """The reference (cosine, as it was trained), each arm by L2, and — with ``views`` — each arm's head
    output by cosine and its base's own output by cosine: whether the base or the head moved, and whether
    the norm helps ranking or hurts it."""
    views: list[View] = []
    if exp.reference:
        views.append(View("reference", str(exp.reference), "cos", description=f"{Path(str(exp.reference)).name}, untouched",
                          role="reference"))
    for arm, directory in (arms or {a: exp.arm_dir(a) for a in exp.arms}).items():
        best = str(directory / "best")
        desc = describe_arm(exp, arm) if arm in exp.arms else arm
        views.append(View(arm, best, "l2", description=desc))
        if exp.evaluation.views:
            views.append(View(f"{arm}.cos", best, "cos", description=f"{arm}: head output, cosine", role="view"))
            views.append(View(f"{arm}.base", best, "cos", "base", description=f"{arm}: base before the head, cosine",
                              role="view"))
    return views + whitening_views(exp)


def whitening_views(exp: ExperimentConfig) -> list[View]:
    """The untouched base whitened at each ``[whitening]`` power, ranked by L2."""
    from ragcun.experiment.whitening import whitening_dir
    from ragcun.reporting.experiment import whitening_label

    wh = exp.whitening
    return [View(whitening_label(p), str(whitening_dir(exp, p)), "l2", role="whitening",
                 description=f"untouched base, whitened after the fact (power {p:g}, {wh.kind}, fitted on training documents)")
            for p in wh.powers]


class ViewModels:
    """The models of a run's views, each directory loaded once for the whole run (every stage and dataset
    shares them; a base view shares its model's modules), through :func:`ragcun.encoding.models.open_model`,
    with ``max_seq_length`` set and checked by :func:`~ragcun.encoding.models.set_max_seq_length` and the
    ``[evaluation]`` section's encoding runtime applied once per loaded object."""

    def __init__(self, max_seq_length: int | None, ev: Any = None) -> None:
        self.max_seq_length, self.ev = max_seq_length, ev
        self._loaded: dict[str, Any] = {}
        self._prepared: dict[int, Any] = {}
        self._runtime: Any = None

    def _model(self, path: str) -> Any:
        from ragcun.encoding.models import open_model, set_max_seq_length

        if path not in self._loaded:
            model = open_model(path, ragcun_class=True)
            if self.max_seq_length:
                set_max_seq_length(model, int(self.max_seq_length), path)
            self._loaded[path] = model
        return self._loaded[path]

    def __call__(self, views: list[View]) -> dict[str, Any]:
        """label -> the model that encodes that view."""
        from ragcun.modeling import submodel
        from ragcun.runtime import prepare_model, resolve_runtime

        models = {}
        for v in views:
            model = self._model(v.model)
            models[v.label] = submodel(model, model.base_modules) if v.part == "base" else model
        if self.ev is not None and self._runtime is None:
            self._runtime = resolve_runtime(self.ev.backend, self.ev.precision)
        if self._runtime is not None and not self._runtime.is_reference:
            for label, model in models.items():  # one runtime model per loaded object (a label ranked twice shares it)
                if id(model) not in self._prepared:
                    self._prepared[id(model)] = (model, prepare_model(model, self._runtime))
                models[label] = self._prepared[id(model)][1]
        return models


# ---------------------------------------------------------------------------- evaluation stages
def evaluate_views(exp: ExperimentConfig, views: list[View], data_dir: str | None = None,
                   results: Path | None = None, models: ViewModels | None = None) -> dict[str, Path]:
    """BEIR evaluation of every view (finished ones skipped); each distinct base encodes a corpus once."""
    from ragcun.data.beir import doc_text, load_beir
    from ragcun.encoding.corpus import encode_corpus_shared
    from ragcun.evaluation.beir_eval import BeirEvaluator

    ev = exp.evaluation
    files = {v.label: (results or exp.output_dir / "results") / f"{v.label}.json" for v in views}
    todo = [v for v in views if not files[v.label].exists()]
    if not todo:
        return files
    models = (models or ViewModels(ev.max_seq_length, ev))(todo)
    for ds in ev.datasets:
        data = load_beir(ds, split=ev.split, data_dir=data_dir)
        ids = list(data.corpus)
        encode_corpus_shared(models, ids, [doc_text(data.corpus[d]) for d in ids], data.name, ev.batch_size)
    evaluators = {score: BeirEvaluator(ev.datasets, score, settings=ev.encode_settings(data_dir), show_progress_bar=False)
                  for score in dict.fromkeys(v.score for v in todo)}  # one per score, each serving every view
    for v in todo:
        logger.info("evaluate %s (%s, %s) on %s", v.label, v.model, v.score, ", ".join(ev.datasets))
        res = evaluators[v.score](models[v.label], model_name=v.label,
                                  run_file=files[v.label].parent / "runs" / f"{v.label}.run")  # + .qrels: trec_eval-ready
        res["description"] = v.description
        res["model_path"] = v.model
        res["view"] = v.part
        write_json(files[v.label], res)
    return files


def measure_isotropy(exp: ExperimentConfig, views: list[View], data_dir: str | None = None,
                     out_root: Path | None = None, models: ViewModels | None = None) -> dict[str, Path]:
    """Isotropy of every model's corpus and query embeddings per dataset, with side-by-side plots.

    The corpus vectors come from the evaluation's embedding cache, so this costs no second pass.
    """
    from ragcun.evaluation.isotropy import analyze

    ev = exp.evaluation
    main = [v for v in views if v.measured]
    files: dict[str, Path] = {}
    models = models or ViewModels(ev.max_seq_length, ev)
    for ds in ev.datasets:
        out = (out_root or exp.output_dir / "isotropy") / Path(ds).name
        files[ds] = out / "isotropy.json"
        if files[ds].exists():
            continue
        loaded = models(main)
        logger.info("isotropy of %s on %s", ", ".join(loaded), ds)
        analyze(list(loaded.values()), ds, out_dir=out, max_docs=ev.isotropy_max_docs or None,
                num_slices=ev.isotropy_num_slices, labels=list(loaded), settings=ev.encode_settings(data_dir))
    return files


def measure_approximate_search(exp: ExperimentConfig, views: list[View], data_dir: str | None = None,
                               models: ViewModels | None = None) -> Path | None:
    """Recall@10 of GaussianRetriever's HNSW and IVF defaults against exact search, on each model's real
    corpus and query embeddings (the embedding cache holds the corpus)."""
    from ragcun.retrieval.recall import ApproximateSearchEvaluator

    ev = exp.evaluation
    out = exp.output_dir / "results" / "approximate_search.json"
    if not ev.approximate_search or out.exists():
        return out if out.exists() else None
    main = [v for v in views if v.role in ("reference", "arm")]
    rows = []
    for ds in ev.datasets:
        evaluator = ApproximateSearchEvaluator(ds, settings=ev.encode_settings(data_dir))
        for label, model in (models or ViewModels(ev.max_seq_length, ev))(main).items():
            rows.append({"model": label, "dataset": ds, **evaluator(model)})
    write_json(out, {"k": 10, "rows": rows})
    return out


def report(exp: ExperimentConfig, result_files: dict[str, Path], isotropy_files: dict[str, Path],
           ann_file: Path | None) -> dict[str, Any]:
    """The experiment's tables and figures; each arm's model card gets its own test results."""
    from ragcun.modeling import run_info
    from ragcun.reporting import build_experiment_report
    from ragcun.reporting.model_card import card_section, write_card_section

    rep = build_experiment_report(exp, result_files, isotropy_files, ann_file)
    reference = "reference" if "reference" in rep["models"] else rep["baseline"]
    in_domain = {ds: exp.in_domain(ds) for ds in rep["datasets"]}
    for arm in exp.arms:
        best = exp.arm_dir(arm) / "best"
        if best.is_dir() and arm in rep["models"]:
            write_card_section(best, card_section(arm, rep, reference, in_domain, run_info(best), str(best)))
    return rep


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
    for arm in exp.arms:  # every arm's config is checked before anything runs
        arm_config(exp, arm, overrides, data_dir)
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
    if exp.whitening.powers:
        from ragcun.experiment.whitening import build_whitening

        tw = time.perf_counter()
        build_whitening(exp, data_dir)
        timings["whitening_s"] = time.perf_counter() - tw
    views = evaluation_views(exp)
    models = ViewModels(exp.evaluation.max_seq_length, exp.evaluation)  # each model loaded once for every stage
    te = time.perf_counter()
    results = evaluate_views(exp, views, data_dir, models=models)
    timings["evaluate_s"] = time.perf_counter() - te
    ti = time.perf_counter()
    iso = measure_isotropy(exp, views, data_dir, models=models)
    timings["isotropy_s"] = time.perf_counter() - ti
    ta = time.perf_counter()
    ann = measure_approximate_search(exp, views, data_dir, models=models)
    timings["approximate_search_s"] = time.perf_counter() - ta
    rep = report(exp, results, iso, ann)
    timings["total_s"] = time.perf_counter() - t0
    write_json(exp.output_dir / "experiment_summary.json",
               {"name": exp.name, "config": str(exp.path), "timings": timings,
                "views": [dataclasses.asdict(v) for v in views], "results": {k: str(v) for k, v in results.items()}})
    logger.info("experiment %s done in %.0f s", exp.name, timings["total_s"])
    return rep
