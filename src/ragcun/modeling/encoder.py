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
from pathlib import Path
from typing import Any, Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Transformer
from torch import nn

from ragcun.config import Schema, choice_problems, non_negative, positive
from ragcun.files import atomic_path
from ragcun.modeling.head_init import WhitenKind, affine_start, whitening_map
from ragcun.modeling.parts import apply_modules, encode_base, parameter_counts

logger = logging.getLogger(__name__)

RAGCUN_CONFIG = "ragcun_config.json"
HeadType = Literal["mlp", "linear"]
HeadInit = Literal["warm", "calibrated", "default"]


def build_head(in_dim: int, output_dim: int = 128, head: HeadType = "mlp",
               hidden_dim: int = 1024) -> list[Dense]:
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

        enc = IsotropicGaussianEncoder(base_model="all-MiniLM-L6-v2", output_dim=128)

    or load a saved one with ``IsotropicGaussianEncoder.from_pretrained(path)`` (or plain
    ``SentenceTransformer(path)``).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        base_model: str | os.PathLike | None = None,
        output_dim: int = 128,  # measured on NFCorpus dev (docs/isotropy.md); keep it <= the base dimension
        head: HeadType = "mlp",
        hidden_dim: int = 1024,
        freeze_base: bool = False,
        freeze_layers: int = 0,
        normalize_base: bool = True,
        max_seq_length: int | None = None,
        prompts: dict[str, str] | None = None,
        modules: list[nn.Module] | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        from ragcun.resolve import load_sentence_transformer, resolve_model

        if base_model is not None and model_name_or_path is not None:
            raise ValueError("pass either base_model (to build a new encoder) or a saved model path, "
                             "not both")
        config: dict[str, Any] = {}
        problems = self.argument_problems(output_dim=output_dim, head=head, hidden_dim=hidden_dim,
                                          freeze_layers=freeze_layers, max_seq_length=max_seq_length)
        if problems:
            raise ValueError("; ".join(problems))
        if base_model is not None:
            base = load_sentence_transformer(base_model, device="cpu")
            body = list(base)
            in_dim = base.get_embedding_dimension()
            prior = Path(resolve_model(base_model).location) / RAGCUN_CONFIG
            n_head = int(json.loads(prior.read_text()).get("num_head_modules", 0)) if prior.is_file() else 0
            if n_head:  # a trained ragcun model as the base: its body, without its head
                in_dim = body[len(body) - n_head].linear.in_features
                body = body[: len(body) - n_head]
                logger.info("base %s is a ragcun model: its body (%d modules), without its %d-module head",
                            base_model, len(body), n_head)
            body = body if normalize_base else [m for m in body if not isinstance(m, Normalize)]
            if output_dim > in_dim:
                logger.warning("a %d-d head on a %d-d base: its warm start leaves %d directions empty, and "
                               "SIGReg cannot fill them (its gradient vanishes where every sample is equal), "
                               "so N(0, I) is out of reach; output_dim <= %d keeps the head full-rank",
                               output_dim, in_dim, output_dim - in_dim, in_dim)
            modules = body + build_head(in_dim, output_dim, head, hidden_dim)
            prompts = prompts if prompts is not None else {k: v for k, v in base.prompts.items() if v}
            kwargs.setdefault("default_prompt_name", base.default_prompt_name)
            config = {
                "base_model": str(base_model),
                "output_dim": output_dim,
                "head": head,
                "hidden_dim": hidden_dim if head == "mlp" else None,
                "num_head_modules": 2 if head == "mlp" else 1,
                "normalize_base": bool(normalize_base),
            }
            super().__init__(modules=modules, device=device, prompts=prompts, similarity_fn_name="euclidean",
                             **kwargs)
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

    @classmethod
    def argument_problems(cls, **kwargs: Any) -> list[str]:
        """What is wrong with these keyword arguments (empty when nothing): checked by the constructor, and by
        a training config before anything loads (its ``[model]`` table is these arguments)."""
        values = {**Schema.of(cls).defaults, **kwargs}
        problems = choice_problems(cls, values)
        problems += positive(values, "output_dim", "hidden_dim", "max_seq_length")
        problems += non_negative(values, "freeze_layers")
        return problems

    # ------------------------------------------------------------------ structure
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> IsotropicGaussianEncoder:
        """Load a saved ragcun (or any sentence-transformers) model directory or alias."""
        return cls(path, **kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> IsotropicGaussianEncoder:  # type: ignore[override]
        """``from_pretrained``: sentence-transformers' ``load`` would return a plain
        ``SentenceTransformer``."""
        return cls.from_pretrained(path, **kwargs)

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
    def base_features(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """What the base (everything before the head) outputs for ``texts``, in eval mode
        (:func:`ragcun.modeling.parts.encode_base`)."""
        return torch.from_numpy(encode_base(self, self.base_modules, list(texts), batch_size, False))

    def _head_forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_modules(self.head_modules, x)

    @torch.no_grad()
    def warm_start_head(self, features: torch.Tensor, power: float = 0.0,
                        kind: WhitenKind = "pca") -> dict[str, Any]:
        """Initialise the head so that it starts exactly where the base model is, or at its whitening.

        On base outputs like ``features`` (N, D_in) the head computes ``s·P(x − μ)``: the centred
        base embedding in its principal axes (P: the top principal directions, orthonormal rows), times
        one global scale ``s`` that gives the outputs unit average variance. When ``D_out >= D_in``
        this is an isometry up to ``s``, so L2 ranking on the head's output *is* the base's own ranking
        (its cosine ranking when the base ends in ``Normalize``), while the output is already centred
        and at the N(0, I) scale. A random head throws that geometry away; a PCA-initialised
        dimension-changing ``Dense`` is what the sentence-transformers maintainers advise.

        ``power`` > 0 tempers the spectrum on the way (each axis scaled by its variance to the power
        −p/2, :func:`ragcun.modeling.head_init.whitening_map`): ``power=1`` starts the head whitened, at
        N(0, I)'s covariance on these features. The MLP head represents the map exactly (GELU(z) −
        GELU(−z) = z); it stays a plain sentence-transformers model. Returns what was done (also kept in
        ``ragcun_config``).
        """
        head = self.head_modules
        if not head:
            raise ValueError("this model has no projection head to initialise")
        d_in, d_out = head[0].linear.in_features, head[-1].linear.out_features
        cap = head[0].linear.out_features // 2 if len(head) == 2 else None
        if cap is not None and cap < 1:
            raise ValueError("the MLP head needs hidden_dim >= 2 for a warm start")
        weight, bias, info = whitening_map(features.to(self.device), d_out, power, kind, max_rank=cap)
        if cap is not None and cap < min(d_in, d_out):
            logger.warning("warm start keeps %d of %d principal directions (hidden_dim %d < 2 x %d): "
                           "the head starts close to, not exactly at, the base", info["rank"],
                           min(d_in, d_out), head[0].linear.out_features, min(d_in, d_out))
        affine_start(head, weight, bias)
        info = {"method": "warm", **info}
        self.ragcun_config["head_init"] = info
        return info

    @torch.no_grad()
    def calibrate_head(self, features: torch.Tensor) -> dict[str, float]:
        """Rescale the head's last layer so its outputs on ``features`` have zero mean and unit variance.

        A data-dependent initialisation (LSUV-style, Mishkin & Matas 2016) of a *random* head: it
        starts at the N(0, I) scale, where SIGReg's gradient does not vanish, but not at the base's
        geometry (see :meth:`warm_start_head`, the default). Returns the applied correction.
        """
        head = self.head_modules
        if not head:
            raise ValueError("this model has no projection head to calibrate")
        x = self._head_forward(features.to(self.device, dtype=torch.float32))
        mean = x.mean(0)
        std = (x - mean).std().clamp_min(1e-8)
        last = head[-1].linear
        last.weight.div_(std)
        if last.bias is not None:
            last.bias.sub_(mean).div_(std)
        info = {"samples": int(x.shape[0]), "scale": float(1.0 / std), "mean_norm_before": float(mean.norm())}
        self.ragcun_config["head_init"] = {"method": "calibrated", **info}
        return info

    def init_head(self, method: HeadInit, features: torch.Tensor | None,
                  power: float = 0.0) -> dict[str, Any]:
        """Initialise the head by ``method`` (``warm`` at whitening ``power``, ``calibrated``, or ``default``
        = as constructed)."""
        if method == "default":
            self.ragcun_config["head_init"] = {"method": "default"}
            return self.ragcun_config["head_init"]
        if features is None:
            raise ValueError(f"head_init={method!r} needs base features of some training texts")
        if method == "warm":
            return self.warm_start_head(features, power)
        if method == "calibrated":
            return self.calibrate_head(features)
        raise ValueError(f"head_init must be warm, calibrated or default, got {method!r}")

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

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameters of the base and the head
        (:func:`ragcun.modeling.parts.parameter_counts`)."""
        return parameter_counts(self)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Save atomically: a crash mid-save leaves any previous model at ``path`` intact."""
        path = Path(path)
        with atomic_path(path) as tmp:
            super().save(str(tmp), *args, **kwargs)
            (tmp / RAGCUN_CONFIG).write_text(json.dumps(self.ragcun_config, indent=2) + "\n")

    def save_pretrained(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.save(path, *args, **kwargs)



def run_info(model_dir: str | Path) -> dict[str, Any] | None:
    """What a trained ragcun model records about its run (``ragcun_config.json``: ``run``), if anything."""
    try:
        cfg = json.loads((Path(model_dir) / RAGCUN_CONFIG).read_text())
    except (OSError, ValueError):
        return None
    run = cfg.get("run") if isinstance(cfg, dict) else None
    return run if isinstance(run, dict) and run.get("name") else None


def query_document_prompts(model: Any) -> tuple[str, str]:
    """The model's query and document prompts ("" where it has none), as ``encode_query`` /
    ``encode_document`` apply them."""
    prompts = getattr(model, "prompts", None) or {}
    return prompts.get("query") or "", prompts.get("document") or ""
