"""The experiment's evaluation: one loop over the views, each view's model handed to every stage that still
lacks its result.

A stage is an evaluator of :mod:`ragcun.evaluation` (or :mod:`ragcun.retrieval.recall`) with its files: it
says which views it wants (those it measures and has not written yet), measures one view at a time and writes
what it measured at its own granularity — a BEIR result per view, an isotropy report per dataset (every
model side by side), one approximate-search table. Finished results are skipped, so a re-run picks up where a
killed one stopped. Before the loop, the BEIR stage gives every model whose corpus vectors are not cached
its vectors from one pass of each distinct base (:func:`~ragcun.encoding.corpus.encode_corpus_shared`);
every stage then reads them from the embedding cache.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragcun.experiment.config import EvaluationSection
from ragcun.experiment.views import View, ViewModels
from ragcun.files import write_json

logger = logging.getLogger(__name__)


class Stage:
    """One evaluator of the run and its files (the contract :func:`evaluate` loops over)."""

    name = "stage"

    def __init__(self) -> None:
        self.seconds = 0.0

    def wants(self, view: View) -> bool:
        """Whether this stage measures ``view`` and has not written its result yet."""
        raise NotImplementedError

    def prepare(self, views: list[View], models: dict[str, Any]) -> None:
        """Work shared by the views before any is measured (``models``: label -> the loaded model)."""

    def measure(self, view: View, model: Any) -> None:
        """Measure one view with its loaded model."""
        raise NotImplementedError

    def finish(self, views: list[View]) -> Any:
        """Write what was measured; return the stage's result files."""
        raise NotImplementedError


class BeirStage(Stage):
    """NDCG and the other BEIR metrics of every view (one :class:`BeirEvaluator`, each dataset read once), one
    ``<label>.json`` per view under ``results`` and its TREC run under ``results/runs``."""

    name = "evaluate"

    def __init__(self, ev: EvaluationSection, settings: Any, results: Path) -> None:
        from ragcun.evaluation.beir_eval import BeirEvaluator

        super().__init__()
        self.ev = ev
        self.datasets, self.results, self.batch_size = ev.datasets, results, ev.batch_size
        self.evaluator = BeirEvaluator(ev.datasets, settings=settings, show_progress_bar=False)

    def file(self, view: View) -> Path:
        return self.results / f"{view.label}.json"

    def wants(self, view: View) -> bool:
        return not self.file(view).exists()

    def prepare(self, views: list[View], models: dict[str, Any]) -> None:
        """The corpus of every model still to evaluate, from one pass of each distinct base (cached)."""
        from ragcun.data.beir import doc_text
        from ragcun.encoding.corpus import encode_corpus_shared

        todo = {v.label: models[v.label] for v in views if self.wants(v)}
        if not todo:
            return
        for ds in self.datasets:
            data = self.evaluator.data(ds)
            ids = list(data.corpus)
            encode_corpus_shared(todo, ids, [doc_text(data.corpus[d]) for d in ids], data.name,
                                 self.batch_size)

    def measure(self, view: View, model: Any) -> None:
        logger.info("evaluate %s (%s, %s) on %s", view.label, view.model, view.score,
                    ", ".join(self.datasets))
        # + .qrels: trec_eval-ready
        hybrid = self.ev.fusion(dense=view.hybrid != "bm25") if view.hybrid else None
        res = self.evaluator(model, model_name=view.label, score=view.score, hybrid=hybrid,
                             run_file=self.results / "runs" / f"{view.label}.run")
        res.update(description=view.description, model_path=view.model, view=view.part)
        write_json(self.file(view), res)

    def finish(self, views: list[View]) -> dict[str, Path]:
        return {v.label: self.file(v) for v in views}


class IsotropyStage(Stage):
    """Isotropy of every measured model's corpus and query embeddings, one report per dataset with the
    models side by side (:func:`~ragcun.evaluation.isotropy.write_isotropy`), written when every model is
    measured."""

    name = "isotropy"

    def __init__(self, ev: EvaluationSection, settings: Any, root: Path,
                 labels: list[str] | None = None) -> None:
        super().__init__()
        self.ev, self.settings = ev, settings
        self.dirs = {ds: root / Path(ds).name for ds in ev.datasets}
        # a report is redone (every model side by side) when a model to measure is missing from it: an arm
        # added to a finished experiment
        self.todo = [ds for ds in ev.datasets if not set(labels or ()) <= self._reported(self.dirs[ds])]
        self.evaluators: dict[str, Any] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {ds: [] for ds in self.todo}

    @staticmethod
    def _reported(directory: Path) -> set[str]:
        """The labels an isotropy report holds (none when it is missing or unreadable)."""
        from ragcun.reporting.compare import load_isotropy

        try:
            return {str(r.get("label")) for r in load_isotropy(directory / "isotropy.json")}
        except (OSError, ValueError):
            return set()

    def wants(self, view: View) -> bool:
        return view.measured and bool(self.todo)

    def measure(self, view: View, model: Any) -> None:
        from ragcun.evaluation.isotropy import IsotropyEvaluator

        for ds in self.todo:
            if ds not in self.evaluators:
                self.evaluators[ds] = IsotropyEvaluator(ds, settings=self.settings,
                                                        max_docs=self.ev.isotropy_max_docs or None,
                                                        num_slices=self.ev.isotropy_num_slices)
            self.rows[ds] += self.evaluators[ds](model, view.label)

    def finish(self, views: list[View]) -> dict[str, Path]:
        from ragcun.evaluation.isotropy import write_isotropy

        for ds in self.todo:
            if ds in self.evaluators:
                e = self.evaluators[ds]
                write_isotropy(self.rows[ds], e.corpus_embeddings, self.dirs[ds], dataset=ds,
                               split=self.settings.split, num_slices=e.num_slices, seed=e.seed)
        return {ds: self.dirs[ds] / "isotropy.json" for ds in self.ev.datasets}


class ApproximateSearchStage(Stage):
    """Recall@10 of GaussianRetriever's HNSW and IVF defaults against exact search on the reference's and each
    arm's real corpus and query embeddings: one table, ``approximate_search.json``."""

    name = "approximate_search"

    def __init__(self, ev: EvaluationSection, settings: Any, out: Path) -> None:
        super().__init__()
        self.ev, self.settings, self.out = ev, settings, out
        self.enabled = ev.approximate_search and not out.exists()
        self.evaluators: dict[str, Any] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {ds: [] for ds in ev.datasets}

    def wants(self, view: View) -> bool:
        return self.enabled and view.role in ("reference", "arm")

    def measure(self, view: View, model: Any) -> None:
        from ragcun.retrieval.recall import ApproximateSearchEvaluator

        for ds in self.ev.datasets:
            if ds not in self.evaluators:
                self.evaluators[ds] = ApproximateSearchEvaluator(ds, settings=self.settings)
            self.rows[ds].append({"model": view.label, "dataset": ds, **self.evaluators[ds](model)})

    def finish(self, views: list[View]) -> Path | None:
        if self.enabled:
            write_json(self.out, {"k": 10, "rows": [r for ds in self.ev.datasets for r in self.rows[ds]]})
        return self.out if self.out.exists() else None


def evaluate(views: list[View], stages: list[Stage], models: ViewModels) -> dict[str, Any]:
    """Run every stage over ``views`` in one loop (each model loaded once, by ``models``); returns each
    stage's files by its name and, under ``seconds``, the time each took."""
    pending = [v for v in views if any(s.wants(v) for s in stages)]
    loaded = models(pending) if pending else {}
    for stage in stages:
        t0 = time.perf_counter()
        stage.prepare(pending, loaded)
        stage.seconds += time.perf_counter() - t0
    for v in pending:
        for stage in stages:
            if stage.wants(v):
                t0 = time.perf_counter()
                stage.measure(v, loaded[v.label])
                stage.seconds += time.perf_counter() - t0
    files: dict[str, Any] = {s.name: s.finish(views) for s in stages}
    files["seconds"] = {s.name: s.seconds for s in stages}
    return files
