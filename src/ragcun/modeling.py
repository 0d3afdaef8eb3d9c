"""The Gaussian encoder: a sentence-transformers base without ``Normalize``, plus a projection head.

The result *is* a :class:`~sentence_transformers.SentenceTransformer` built from
sentence-transformers' own modules (``Transformer``, ``Pooling``, ``Dense``) with
``similarity_fn_name="euclidean"``, so a saved model loads with plain
``SentenceTransformer(path)`` — no ragcun needed — and ranks by L2 distance. The output is
deliberately not normalised: the norm carries confidence.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Transformer
from torch import nn

from ragcun.io import atomic_path

logger = logging.getLogger(__name__)

RAGCUN_CONFIG = "ragcun_config.json"
HeadType = Literal["mlp", "linear"]


def build_head(in_dim: int, output_dim: int = 512, head: HeadType = "mlp", hidden_dim: int = 1024) -> list[Dense]:
    """The projection head as sentence-transformers ``Dense`` modules (loadable without ragcun)."""
    if head == "mlp":
        return [
            Dense(in_dim, hidden_dim, activation_function=nn.GELU()),
            Dense(hidden_dim, output_dim, activation_function=nn.Identity()),
        ]
    if head == "linear":
        return [Dense(in_dim, output_dim, activation_function=nn.Identity())]
    raise ValueError(f"head must be 'mlp' or 'linear', got {head!r}")


def _layer_list(hf_model: nn.Module) -> nn.ModuleList | None:
    """The transformer's list of blocks (BERT, MPNet, RoBERTa, Gemma …), found by shape not by name."""
    n_layers = getattr(getattr(hf_model, "config", None), "num_hidden_layers", None)
    for _name, mod in hf_model.named_modules():
        if isinstance(mod, nn.ModuleList) and (n_layers is None or len(mod) == n_layers):
            return mod
    return None


class IsotropicGaussianEncoder(SentenceTransformer):
    """A sentence encoder whose unnormalised output is trained toward N(0, I) and ranked by L2.

    Build a new one from any sentence-transformers base::

        enc = IsotropicGaussianEncoder(base_model="all-MiniLM-L6-v2", output_dim=512)

    or load a saved one with ``IsotropicGaussianEncoder.from_pretrained(path)`` (or plain
    ``SentenceTransformer(path)``).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        base_model: str | os.PathLike | None = None,
        output_dim: int = 512,
        head: HeadType = "mlp",
        hidden_dim: int = 1024,
        freeze_base: bool = False,
        freeze_layers: int = 0,
        max_seq_length: int | None = None,
        prompts: dict[str, str] | None = None,
        modules: list[nn.Module] | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        from ragcun.models import load_sentence_transformer, resolve_model

        if base_model is not None and model_name_or_path is not None:
            raise ValueError("pass either base_model (to build a new encoder) or a saved model path, not both")
        config: dict[str, Any] = {}
        if base_model is not None:
            base = load_sentence_transformer(base_model, device="cpu")
            body = [m for m in base if not isinstance(m, Normalize)]
            in_dim = base.get_embedding_dimension()
            modules = body + build_head(in_dim, output_dim, head, hidden_dim)
            prompts = prompts if prompts is not None else {k: v for k, v in base.prompts.items() if v}
            kwargs.setdefault("default_prompt_name", base.default_prompt_name)
            config = {
                "base_model": str(base_model),
                "output_dim": output_dim,
                "head": head,
                "hidden_dim": hidden_dim if head == "mlp" else None,
                "num_head_modules": 2 if head == "mlp" else 1,
            }
            super().__init__(modules=modules, device=device, prompts=prompts, similarity_fn_name="euclidean", **kwargs)
        else:
            location = None
            if model_name_or_path is not None and modules is None:
                location = resolve_model(model_name_or_path).location
                cfg_file = Path(location) / RAGCUN_CONFIG
                if cfg_file.exists():
                    config = json.loads(cfg_file.read_text())
            super().__init__(location, modules=modules, device=device, prompts=prompts, **kwargs)
            if not config:
                config = {"num_head_modules": self._infer_head_size()}
        self.ragcun_config: dict[str, Any] = config
        if max_seq_length is not None:
            self.max_seq_length = max_seq_length
        self.set_freezing(freeze_base=freeze_base, freeze_layers=freeze_layers)

    # ------------------------------------------------------------------ structure
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> IsotropicGaussianEncoder:
        """Load a saved ragcun (or any sentence-transformers) model directory or alias."""
        return cls(path, **kwargs)

    def _infer_head_size(self) -> int:
        """For models saved without ragcun's config: the trailing Dense modules form the head."""
        n = 0
        for module in reversed(list(self)):
            if isinstance(module, Dense):
                n += 1
            else:
                break
        return n

    @property
    def head_modules(self) -> list[nn.Module]:
        n = int(self.ragcun_config.get("num_head_modules", 0))
        return list(self)[len(self) - n :] if n else []

    @property
    def base_modules(self) -> list[nn.Module]:
        n = int(self.ragcun_config.get("num_head_modules", 0))
        return list(self)[: len(self) - n]

    def base_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.base_modules for p in m.parameters()]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.head_modules for p in m.parameters()]

    # ------------------------------------------------------------------ head initialisation
    @torch.no_grad()
    def base_features(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """What the base (everything before the head) outputs for ``texts``, in eval mode."""
        from sentence_transformers import SentenceTransformer

        body = SentenceTransformer(modules=self.base_modules, device=str(self.device))
        was_training = [m.training for m in self.base_modules]
        out = body.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        for m, t in zip(self.base_modules, was_training, strict=True):
            m.train(t)
        return out.detach().float()

    @torch.no_grad()
    def calibrate_head(self, features: torch.Tensor) -> dict[str, float]:
        """Rescale the head's last layer so its outputs on ``features`` have zero mean and unit variance.

        A data-dependent initialisation (LSUV-style, Mishkin & Matas 2016). It matters here: a
        freshly initialised head maps sentences to vectors of norm ~1 in 512-d, i.e. a per-dimension
        scale of ~0.04, where SIGReg's gradient (∝ sin(t·x)) all but vanishes and a contrastive
        temperature has no sensible value. Starting every arm at the N(0, I) scale makes λ_iso the
        only difference between the baseline and the isotropy arm. Returns the applied correction.
        """
        head = self.head_modules
        if not head:
            raise ValueError("this model has no projection head to calibrate")
        x = features.to(self.device, dtype=torch.float32)
        for m in head:
            x = m({"sentence_embedding": x})["sentence_embedding"]
        mean = x.mean(0)
        std = (x - mean).std().clamp_min(1e-8)
        last = head[-1].linear
        last.weight.div_(std)
        if last.bias is not None:
            last.bias.sub_(mean).div_(std)
        info = {"samples": int(x.shape[0]), "scale": float(1.0 / std), "mean_norm_before": float(mean.norm())}
        self.ragcun_config["head_init"] = {"method": "calibrated", **info}
        return info

    # ------------------------------------------------------------------ freezing
    def set_freezing(self, freeze_base: bool = False, freeze_layers: int = 0) -> None:
        """Freeze the whole base, or its embeddings and first ``freeze_layers`` blocks."""
        for p in self.base_parameters():
            p.requires_grad_(not freeze_base)
        if not freeze_base and freeze_layers > 0:
            transformers_ = [m for m in self.base_modules if isinstance(m, Transformer)]
            if not transformers_:
                raise ValueError("freeze_layers needs a Transformer module in the base")
            hf = transformers_[0].auto_model
            for name, mod in hf.named_modules():
                if name.split(".")[-1] == "embeddings" or name.endswith("embed_tokens"):
                    mod.requires_grad_(False)
            layers = _layer_list(hf)
            if layers is None:
                raise ValueError(f"could not find the transformer blocks of {type(hf).__name__}")
            if freeze_layers > len(layers):
                raise ValueError(f"freeze_layers={freeze_layers} but the base has {len(layers)} layers")
            for block in list(layers)[:freeze_layers]:
                block.requires_grad_(False)
        self.ragcun_config["freeze_base"] = bool(freeze_base)
        self.ragcun_config["freeze_layers"] = int(freeze_layers)

    def parameter_groups(
        self, base_learning_rate: float = 1e-5, projection_learning_rate: float = 5e-4, weight_decay: float = 0.05
    ) -> list[dict[str, Any]]:
        """AdamW parameter groups: base and head at their own learning rates; no decay on biases/norms."""
        groups = []
        for group, params, lr in (
            ("base", self.base_named_trainable(), base_learning_rate),
            ("head", self.head_named_trainable(), projection_learning_rate),
        ):
            decay = [p for n, p in params if p.ndim >= 2]
            no_decay = [p for n, p in params if p.ndim < 2]
            if decay:
                groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{group}"})
            if no_decay:
                groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{group}_no_decay"})
        return groups

    def base_named_trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for i, m in enumerate(self.base_modules) for n, p in m.named_parameters(prefix=str(i)) if p.requires_grad]

    def head_named_trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for i, m in enumerate(self.head_modules) for n, p in m.named_parameters(prefix=f"head{i}") if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total parameters of the base and the head."""
        base, head = self.base_parameters(), self.head_parameters()
        return {
            "base_trainable": sum(p.numel() for p in base if p.requires_grad),
            "base_total": sum(p.numel() for p in base),
            "head_trainable": sum(p.numel() for p in head if p.requires_grad),
            "head_total": sum(p.numel() for p in head),
        }

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Save atomically: a crash mid-save leaves any previous model at ``path`` intact."""
        path = Path(path)
        with atomic_path(path) as tmp:
            super().save(str(tmp), *args, **kwargs)
            (tmp / RAGCUN_CONFIG).write_text(json.dumps(self.ragcun_config, indent=2) + "\n")

    def save_pretrained(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.save(path, *args, **kwargs)


def copy_model_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a saved model directory atomically (used for ``best/`` during training)."""
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)


def embedding_device(model: SentenceTransformer) -> torch.device:
    return next(model.parameters()).device
