"""What a ragcun model's card says, for every command that writes one: ``train`` (the run and the card data),
``experiment`` (its results section) and ``push`` (the training details and the method's reference).

A trained model records its run in ``ragcun_config.json`` (``run``: its name, base, data and the tables it was
built from, :meth:`ragcun.training.config.TrainConfig.record`) and in sentence-transformers' card data, so the
card names the real base model instead of "Unknown", and evaluations, run files and reports call the model by
its run name (``demo/isotropy``) instead of its folder (``best``). A results section sits between
:data:`START` and :data:`END` right after the card's title and is replaced on every run, never duplicated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragcun.files import write_text

START, END = "<!-- ragcun:results -->", "<!-- /ragcun:results -->"
#: The sentence-transformers losses a peer arm trains with (``st_loss``), as tables name them.
ST_LOSS_NAMES = {"mnrl": "MultipleNegativesRankingLoss (cosine)", "distill_kl": "DistillKLDivLoss (cosine)"}
#: The method's reference, in every card (the loss's own citation is lost when a card is regenerated).
BIBTEX = """```bibtex
@article{balestriero2025lejepa,
  title   = {LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics},
  author  = {Balestriero, Randall and LeCun, Yann},
  journal = {arXiv preprint arXiv:2511.08544},
  year    = {2025}
}
```"""
TAGS = ["ragcun", "gaussian-embeddings", "sigreg", "euclidean-distance"]
#: Training settings a Hub reader needs to reproduce the run (from ``train_summary.json``'s config).
HYPERPARAMETERS = ("base_model", "output_dim", "head", "freeze_base", "freeze_layers", "lambda_isotropy",
                   "num_slices", "slice_policy", "sigreg_sample", "temperature", "teacher", "distill_loss",
                   "lambda_distill", "learning_rate", "head_learning_rate", "per_device_train_batch_size",
                   "num_train_epochs", "max_steps", "max_seq_length", "train_max_seq_length", "bf16", "seed")


def training_section(summary: dict[str, Any]) -> str:
    """The card's training details from ``train_summary.json``: data, loss, hyperparameters, validation
    metrics at the kept step, hardware and versions. No local path is written."""
    cfg = flat(summary.get("config") or {})
    data = summary.get("data") or {}
    manifest = data.get("triplets_manifest") or {}
    lines = ["## Training (ragcun)", ""]
    sources = [f"{s.get('name')} ({s.get('kind', 'beir')}, {s.get('split', 'train')} split: "
               f"{s.get('queries', '?'):,} queries, {s.get('documents', '?'):,} documents)"
               for s in manifest.get("sources", []) if isinstance(s, dict)]
    lines.append(f"- **Training data:** {', '.join(sources) or 'see train_summary.json'}; "
                 f"{data.get('rows', '?'):,} training rows (columns {', '.join(data.get('columns', []))}), "
                 f"data fingerprint `{data.get('fingerprint', '?')}`")
    lam = cfg.get("lambda_isotropy")
    loss = (f"Euclidean InfoNCE on −‖q − d‖² / τ (τ = {cfg.get('temperature')}) + λ·SIGReg (λ = {lam}, "
            f"{cfg.get('num_slices')} {cfg.get('slice_policy')} slices; LeJEPA's sliced Epps–Pulley test)")
    if cfg.get("teacher") not in (None, "", "none"):
        loss += (f" + {cfg.get('lambda_distill')}·{cfg.get('distill_loss')} to a {cfg.get('teacher')} "
                 "teacher's scores")
    lines += [f"- **Loss:** {loss}",
              f"- **Steps:** {summary.get('global_steps')} on {summary.get('device')} "
              f"(world size {summary.get('world_size')}), {summary.get('wall_time_s', 0):.0f} s",
              "", "| hyperparameter | value |", "|---|---|"]
    teacherless = cfg.get("teacher") in (None, "", "none")
    lines += [f"| {k} | {cfg[k]} |" for k in HYPERPARAMETERS if cfg.get(k) is not None
              and not (teacherless and k in ("teacher", "distill_loss", "lambda_distill"))]
    best = summary.get("best") or {}
    row = next((r for r in summary.get("validation_curve", []) if r.get("step") == best.get("step")), None)
    if row:
        lines += ["", f"Validation (the kept checkpoint, step {best.get('step')}, chosen by "
                      f"{best.get('metric')}):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in row.items() if k != "step" and isinstance(v, int | float)]
    versions = summary.get("versions") or {}
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    return "\n".join(lines) + "\n"


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """A recorded config's keys out of their tables (``{"loss": {"temperature": 5}}`` becomes
    ``{"temperature": 5}``; an older, flat record stays as it is)."""
    out = {k: v for k, v in record.items() if not isinstance(v, dict)}
    for value in record.values():
        if isinstance(value, dict):
            out.update(value)
    return out


def describe_model(encoder: Any, run: dict[str, Any]) -> dict[str, Any]:
    """Record ``run`` on ``encoder`` (saved with it) and fill its model card data from it."""
    from ragcun.resolve import base_card, hub_id

    encoder.ragcun_config["run"] = run
    card = getattr(encoder, "model_card_data", None)
    if card is None:
        return run
    r, name = flat(run), run["name"]
    hub = hub_id(r["base_model"])
    if hub:
        card.base_model = hub  # set directly: the card's own lookup needs the Hub
    known = base_card(r["base_model"])  # a fine-tune inherits its base's license and language
    card.license = card.license or known.get("license")
    card.language = card.language or known.get("language")
    if r.get("st_loss", "none") != "none":  # the peer: the base fine-tuned with sentence-transformers' loss
        card.model_name = f"ragcun {name}: {r['base_model']} fine-tuned with {ST_LOSS_NAMES[r['st_loss']]}"
        card.add_tags(["ragcun"])
        return run
    if r.get("train_side") == "query":  # a Router: the trained query tower, the base model's documents kept
        card.model_name = f"ragcun {name}: a query tower on {r['base_model']}'s documents (kept)"
        card.add_tags(TAGS)
        return run
    card.model_name = (f"ragcun {name}: {r['base_model']} + Gaussian head ({r['output_dim']}-d, "
                       f"{r['head']}), λ_iso = {r['lambda_isotropy']:g}"
                       f"{', frozen base' if r['freeze_base'] else ''}")
    card.add_tags(TAGS)
    return run


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
