"""What a trained ragcun model says about itself: its name, its base and how it was trained.

Written into ``ragcun_config.json`` (``run``) and into sentence-transformers' model card data, so
the card names the real base model instead of "Unknown", and ``ragcun evaluate``, run files and
reports call the model by its run name (``demo/isotropy``) instead of its folder (``best``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragcun.training.config import TrainConfig

#: Training keys a reader of the card needs to know what the model is.
RUN_KEYS = ("lambda_isotropy", "loss_form", "sigreg_on", "num_slices", "temperature", "distance",
            "freeze_base", "head_init", "head_init_power", "output_dim", "slice_policy", "sigreg_sample",
            "sigreg_queue", "base_learning_rate", "projection_learning_rate", "epochs", "max_steps",
            "batch_size", "max_seq_length", "seed", "st_loss")

#: The sentence-transformers losses a peer arm trains with (``st_loss``), as tables name them.
ST_LOSS_NAMES = {"mnrl": "MultipleNegativesRankingLoss (cosine)", "distill_kl": "DistillKLDivLoss (cosine)"}


def run_name(cfg: TrainConfig) -> str:
    """``cfg.run_name``, else the output directory's path below ``runs/`` without ``arms``
    (``runs/demo/arms/isotropy`` → ``demo/isotropy``, ``runs/my-model`` → ``my-model``), else its folder name:
    never the folders around the run, which mean nothing on the Hub or in MTEB."""
    if cfg.run_name:
        return cfg.run_name
    parts = Path(cfg.output_dir).resolve().parts
    if "runs" in parts:
        below = [p for p in parts[len(parts) - parts[::-1].index("runs"):] if p != "arms"]
        if below:
            return "/".join(below[-2:])
    return parts[-1] if parts else str(cfg.output_dir)


def describe_model(encoder: Any, cfg: TrainConfig, train_examples: int) -> dict[str, Any]:
    """Record the run on ``encoder`` (saved with it) and fill its model card data."""
    from ragcun.resolve import base_card, hub_id

    name = run_name(cfg)
    # the data's folder name, not its local path (the config travels with the model to the Hub)
    run = {"name": name, "base_model": cfg.base_model, "train_data": Path(str(cfg.train_data)).name,
           "train_examples": int(train_examples), **{k: getattr(cfg, k) for k in RUN_KEYS}}
    encoder.ragcun_config["run"] = run
    card = getattr(encoder, "model_card_data", None)
    if card is not None:
        hub = hub_id(cfg.base_model)
        if hub:
            card.base_model = hub  # set directly: the card's own lookup needs the Hub
        known = base_card(cfg.base_model)  # a fine-tune inherits its base's license and language
        card.license = card.license or known.get("license")
        card.language = card.language or known.get("language")
        if cfg.st_loss != "none":  # the peer: the base fine-tuned with sentence-transformers' own loss
            card.model_name = f"ragcun {name}: {cfg.base_model} fine-tuned with {ST_LOSS_NAMES[cfg.st_loss]}"
            card.add_tags(["ragcun"])
            return run
        card.model_name = (f"ragcun {name}: {cfg.base_model} + Gaussian head ({cfg.output_dim}-d, "
                           f"{cfg.head}), λ_iso = {cfg.lambda_isotropy:g}"
                           f"{', frozen base' if cfg.freeze_base else ''}")
        card.add_tags(["ragcun", "gaussian-embeddings", "sigreg", "euclidean-distance"])
    return run
