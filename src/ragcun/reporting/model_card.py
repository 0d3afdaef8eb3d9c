"""The experiment's test-set results, written into each trained arm's model card (``best/README.md``).

sentence-transformers writes the card when the model is saved, so it can only hold validation
metrics. After the experiment has evaluated the arm, this adds a section with what a reader of the
card needs: the BEIR test metrics beside the untouched base (with the paired test), the isotropy of
the corpus embeddings, how the model was trained, and how to rank with it by L2. The section sits
between two markers and is replaced on every run, so rerunning an experiment never duplicates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragcun.io import write_text
from ragcun.reporting.tables import fmt_p

START, END = "<!-- ragcun:results -->", "<!-- /ragcun:results -->"
METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def card_section(arm: str, report: dict[str, Any], reference: str, in_domain: dict[str, bool],
                 run: dict[str, Any] | None, model_path: str) -> str:
    """The Markdown section for one arm, from the experiment report
    (:func:`ragcun.experiment.report.build_experiment_report`)."""
    values, sig = report["values"], report.get("significance", {})
    lines = [START, "", f"## ragcun evaluation: `{run['name'] if run else arm}` (test split, ×100)", ""]
    head = " | ".join(METRICS)
    lines += [f"| dataset | model | {head} | Δ NDCG@10 vs {reference} (95% CI) | p |",
              "|---|---|" + "---:|" * (len(METRICS) + 2)]
    for ds in report["datasets"]:
        s = sig.get(ds, {}).get(arm, {})
        delta = (f"{100 * s['mean_diff']:+.2f} [{100 * s['ci_low']:+.2f}, {100 * s['ci_high']:+.2f}]"
                 if s else "–")
        where = "in-domain" if in_domain.get(ds) else "transfer"
        for label in (arm, reference):
            cells = " | ".join(f"{100 * values[m][label][ds]:.2f}" if ds in values.get(m, {}).get(label, {})
                               else "–" for m in METRICS)
            tail = f"{delta} | {fmt_p(s.get('perm_p'))}" if label == arm else "– | –"
            lines.append(f"| {ds} ({where}) | {label} | {cells} | {tail} |")
    iso = [r for r in report.get("isotropy", []) if r.get("label") == arm and r.get("kind") == "corpus"]
    if iso:
        lines += ["", "Isotropy of the corpus embeddings (N(0, I) gives SIGReg ratio 1, IsoScore 1; lower "
                  "ratio and higher IsoScore are closer):", "",
                  "| dataset | SIGReg ratio | IsoScore | mean norm | √dim |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['dataset']} | {r['sigreg_ratio']:.2f} | {r['isoscore']:.3f} | "
                  f"{r['norm_mean']:.2f} | {r['dim'] ** 0.5:.2f} |" for r in iso]
    if run:
        lines += ["", f"Trained from `{run['base_model']}` on {run['train_examples']:,} examples of "
                  f"`{run['train_data']}`: λ_iso = {run['lambda_isotropy']:g} ({run['loss_form']} form, "
                  f"SIGReg on {run['sigreg_on']} sets, {run['num_slices']} slices), Euclidean InfoNCE "
                  f"τ = {run['temperature']:g} ({run['distance']} distance), "
                  f"{'frozen base' if run['freeze_base'] else 'full fine-tuning'}, "
                  f"head init {run['head_init']}, learning rates {run['base_learning_rate']:g} (base) / "
                  f"{run['projection_learning_rate']:g} (head), batch {run['batch_size']}, sequence length "
                  f"{run['max_seq_length']}, seed {run['seed']}."]
    lines += ["", "Rank by L2 distance (the embeddings are not normalised; the norm is part of the model):",
              "", "```python", "from sentence_transformers import SentenceTransformer", "",
              f'model = SentenceTransformer("{model_path}")',
              'q = model.encode_query(["what causes vitamin D deficiency?"])',
              'd = model.encode_document(["Vitamin D deficiency is common ...", "Statins lower LDL ..."])',
              "model.similarity(q, d)  # −‖q − d‖: higher is nearer", "",
              "from ragcun import GaussianRetriever  # FAISS L2 index with persistence",
              f'r = GaussianRetriever("{model_path}"); r.add_documents(docs); r.retrieve("query", top_k=10)',
              "```", "", END]
    return "\n".join(lines) + "\n"


def write_card_section(model_dir: str | Path, section: str) -> Path:
    """Put ``section`` into ``model_dir/README.md`` after its title, replacing an earlier one (atomic)."""
    path = Path(model_dir) / "README.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        lines = text.splitlines(keepends=True)
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), len(lines))
        text = "".join(lines[:at]) + "\n" + section + "\n" + "".join(lines[at:])
    return write_text(path, text)
