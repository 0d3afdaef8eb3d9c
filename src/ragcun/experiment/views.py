"""What an experiment evaluates: its views (a model, or the base inside it, ranked by one score) and the
models behind them, each directory loaded once for the whole run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcun.experiment.config import BASE_ARM, ExperimentConfig, arm_config
from ragcun.experiment.whitening import CORRECTIONS, correction_dir, whitening_dir, whitening_label
from ragcun.modeling.card import ST_LOSS_NAMES


@dataclass(frozen=True)
class View:
    """One thing to evaluate: a model (or the base inside it) ranked by one score."""

    label: str  # file name and table label
    model: str  # model directory or alias
    score: str  # l2 | cos
    part: str = "model"  # "model": the whole model; "base": the base only (the embedding before the head)
    description: str = ""
    role: str = "arm"  # reference | arm | view (an arm seen another way) | whitening (the post-hoc reference)
    # | correction (the training-free mean removal) | peer (BM25, the reference fused with BM25)
    hybrid: str = ""  # "": dense alone; "bm25": BM25 alone; "fused": the score fused with BM25 ([evaluation])

    @property
    def measured(self) -> bool:
        """Whether this view's embeddings are measured for isotropy (each model once, as it ranks)."""
        return self.role in ("reference", "arm", "whitening", "correction")


def describe_arm(exp: ExperimentConfig, arm: str, cfg: Any = None) -> str:
    """How an arm trains, for its table row; ``cfg``: its training config when the caller has it."""
    cfg = cfg or arm_config(exp, arm)  # the file's keys under the arm's table, as it trains
    if cfg.st_loss != "none":
        layers = f" above layer {cfg.freeze_layers}" if cfg.freeze_layers else ""
        teacher = f", {cfg.teacher} teacher" if cfg.teacher != "none" else ""
        return f"sentence-transformers {ST_LOSS_NAMES[cfg.st_loss]}, fine-tuned{layers}{teacher}"
    base_arm = exp.arms[arm].get(BASE_ARM)
    if cfg.train_side == "query":
        teacher = f" and the {cfg.teacher} teacher" if cfg.teacher != "none" else ""
        return (f"query tower on {base_arm or Path(str(cfg.base_model)).name}'s documents (unchanged), "
                f"trained on the labels{teacher}")
    what = (f"head only, on {base_arm}'s fine-tuned base" if cfg.freeze_base and base_arm
            else "head only" if cfg.freeze_base
            else f"fine-tuned above layer {cfg.freeze_layers}" if cfg.freeze_layers else "full fine-tuning")
    if cfg.teacher != "none":
        what += f", {cfg.teacher} teacher"
    return f"λ_iso = {cfg.lambda_isotropy:g}, {what}"


def evaluation_views(exp: ExperimentConfig, arms: dict[str, Path] | None = None) -> list[View]:
    """The reference (cosine, as it was trained), each arm by L2, and — with ``views`` — each arm's head
    output by cosine and its base's own output by cosine: whether the base or the head moved, and whether
    the norm helps ranking or hurts it."""
    views: list[View] = []
    if exp.reference:
        views.append(View("reference", str(exp.reference), "cos",
                          description=f"{Path(str(exp.reference)).name}, untouched", role="reference"))
    for arm, directory in (arms or {a: exp.arm_dir(a) for a in exp.arms}).items():
        best = str(directory / "best")
        cfg = arm_config(exp, arm) if arm in exp.arms else None
        desc = describe_arm(exp, arm, cfg) if cfg else arm
        peer = cfg is not None and cfg.st_loss != "none"
        # a sentence-transformers peer ranks by its own cosine and has no head to look behind
        views.append(View(arm, best, "cos" if peer else "l2", description=desc))
        if exp.evaluation.views and not peer:
            views.append(View(f"{arm}.cos", best, "cos", description=f"{arm}: head output, cosine",
                              role="view"))
            if cfg is None or cfg.train_side != "query":  # a query tower's two encoders share no one base
                views.append(View(f"{arm}.base", best, "cos", "base",
                                  description=f"{arm}: base before the head, cosine", role="view"))
    return views + hybrid_views(exp, views) + whitening_views(exp)


def hybrid_views(exp: ExperimentConfig, views: list[View]) -> list[View]:
    """With ``[evaluation] hybrid``: BM25 alone, and the reference and each arm fused with BM25."""
    if not exp.evaluation.hybrid:
        return []
    label = exp.evaluation.fusion().label()
    out = []
    for v in views:
        if v.role == "reference":
            out.append(View("bm25", v.model, v.score, description="BM25 (bm25s, Lucene k1 = 0.9, b = 0.4)",
                            role="peer", hybrid="bm25"))
            out.append(View("reference+bm25", v.model, v.score, role="peer", hybrid="fused",
                            description=f"{v.description} + BM25, {label}"))
        elif v.role == "arm":
            out.append(View(f"{v.label}+bm25", v.model, v.score, role="view", hybrid="fused",
                            description=f"{v.label} + BM25, {label}"))
    return out


def whitening_views(exp: ExperimentConfig) -> list[View]:
    """The untouched base whitened at each ``[whitening]`` power, ranked by L2."""
    wh = exp.whitening
    views = [View(whitening_label(p), str(whitening_dir(exp, p)), "l2", role="whitening",
                  description=f"untouched base, whitened after the fact (power {p:g}, {wh.kind}, fitted on "
                              "training documents)")
             for p in wh.powers]
    if wh.corrections:
        what = "untouched base centred on the training documents' mean"
        views += [View(label, str(correction_dir(exp, label)), "cos", role="correction",
                       description=what + (f", its top {n} principal direction removed" if n else ""))
                  for label, n in CORRECTIONS.items()]
    return views


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
            self._runtime = resolve_runtime(self.ev.runtime, self.ev.precision)
        if self._runtime is not None and not self._runtime.is_reference:
            # one runtime model per loaded object (a label ranked twice shares it)
            for label, model in models.items():
                if id(model) not in self._prepared:
                    self._prepared[id(model)] = (model, prepare_model(model, self._runtime))
                models[label] = self._prepared[id(model)][1]
        return models
