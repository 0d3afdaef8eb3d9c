"""Publishing a ragcun model on the Hugging Face Hub (``ragcun push``) with a complete model card.

The card sentence-transformers writes when a model is saved leaves the parts it cannot know as
placeholders: ``SentenceTransformer("sentence_transformers_model_id")`` in the usage example, the license
"Unknown". :func:`stage` re-saves the model into a folder with its card data filled in (the repository id,
the license, the language, the base model), puts the parameter count in the card, keeps the
experiment's results section (between ragcun's markers, right after the title) and refuses to go on while
any placeholder remains. :func:`push` uploads that folder with ``huggingface_hub``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ragcun.modeling import parameter_counts
from ragcun.modeling.card import BIBTEX, END, START, TAGS, training_section, write_card_section

logger = logging.getLogger(__name__)

#: Text sentence-transformers' template leaves in a card when it lacks the facts (outside HTML comments).
PLACEHOLDERS = ("sentence_transformers_model_id", "**License:** Unknown", "More Information Needed")


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` as the Hub accepts it, else a one-line ValueError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise ValueError(f"repository id {repo_id!r}: expected 'owner/name' (your user or organisation, "
                         "a slash, the model's name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"repository id {repo_id!r}: {str(exc).splitlines()[0]}") from None
    return repo_id


def _visible(text: str) -> str:
    """The card without its HTML comments (the template's commented-out sections are not shown)."""
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def _facts(model: Any, repo_id: str, counts: dict[str, int]) -> str:
    dim = model.get_embedding_dimension()
    head = f" = base {counts['base']:,} + Gaussian head {counts['head']:,}" if counts["head"] else ""
    return (f"- **Model id:** `{repo_id}`\n- **Parameters:** {counts['total']:,}{head}\n"
            f"- **Embedding:** {dim}-d, not normalised; rank by L2 distance "
            "(`model.similarity` is −‖q − d‖)\n")


def _insert(text: str, after: str, block: str) -> str:
    """``block`` right after the heading ``after`` (sentence-transformers' template), else at the end."""
    if not block.strip():
        return text
    if after in text:
        return text.replace(after, after + "\n" + block + "\n", 1)
    return text.rstrip("\n") + "\n\n" + after + "\n" + block + "\n"


def _scrub(folder: Path, local: list[str]) -> None:
    """Remove local paths from the staged JSON files (a path becomes its last component)."""
    for f in folder.rglob("*.json"):
        text = f.read_text(encoding="utf-8")
        new = text
        for p in sorted({p for p in local if p and len(p) > 1}, key=len, reverse=True):
            new = new.replace(p.rstrip("/") + "/", "").replace(p.rstrip("/"), Path(p).name)
        if new != text:
            f.write_text(new, encoding="utf-8")


def stage(model_dir: str | os.PathLike, repo_id: str, out: str | os.PathLike, *,
          license: str | None = None) -> dict[str, Any]:
    """Write what ``push`` uploads into ``out`` (replaced atomically): the model and its completed card."""
    from ragcun.encoding.models import open_model
    from ragcun.resolve import base_card, hub_id

    check_repo_id(repo_id)
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a saved sentence-transformers model (no modules.json)")
    # the ragcun class: its head is counted and its config saved
    model = open_model(model_dir, device="cpu", ragcun_class=True)
    card = model.model_card_data
    old = (model_dir / "README.md").read_text(encoding="utf-8") if (model_dir / "README.md").is_file() else ""
    run = (getattr(model, "ragcun_config", None) or {}).get("run") or {}
    base = re.search(r"^base_model: (\S+)$", old, flags=re.M)  # the saved card's front matter
    card.base_model = card.base_model or (base[1] if base else None) or hub_id(run.get("base_model") or "")
    title = re.search(r"^# (.+)$", old, flags=re.M)
    card.model_name = card.model_name or (title[1] if title else None)
    known = base_card(card.base_model or run.get("base_model"))
    card.model_id = repo_id
    card.license = license or card.license or known.get("license")
    if not card.license:
        raise ValueError(f"{model_dir}: the base model's license is unknown here; pass --license (the base "
                         "model's, e.g. apache-2.0)")
    card.language = card.language or known.get("language")
    card.add_tags(TAGS)
    if run.get("name"):  # the run's name, never the local folders around it
        card.model_name = re.sub(r"^ragcun [^:]+:", f"ragcun {run['name']}:", card.model_name or "") or None
    counts = parameter_counts(model)
    out = Path(out)
    model.save(str(out), create_model_card=False)
    from sentence_transformers.base.model_card import generate_model_card

    # the card from the data above
    (out / "README.md").write_text(generate_model_card(model), encoding="utf-8")
    section = old[old.index(START):old.index(END) + len(END)] if START in old and END in old else ""
    section = re.sub(r'((?:SentenceTransformer|GaussianRetriever)\()"[^"]*"', rf'\1"{repo_id}"', section)
    facts = _facts(model, repo_id, counts)
    section = (section.replace(START, START + "\n\n" + facts, 1) if section
               else f"{START}\n\n{facts}\n{END}")
    readme = write_card_section(out, section)
    text = readme.read_text(encoding="utf-8")
    summary_path = model_dir.resolve().parent / "train_summary.json"
    extra = training_section(json.loads(summary_path.read_text(encoding="utf-8"))) if summary_path.is_file() \
        else ""
    text = _insert(text, "## Training Details\n", extra.replace("## Training (ragcun)", "### The ragcun run"))
    text = _insert(text, "### BibTeX\n", "#### LeJEPA (SIGReg, the method)\n\n" + BIBTEX + "\n")
    readme.write_text(text, encoding="utf-8")
    _scrub(out, [str(model_dir.resolve()), str(model_dir.resolve().parent), str(Path.cwd()),
                 str(Path.home())])
    text = readme.read_text(encoding="utf-8")
    left = [p for p in PLACEHOLDERS if p in _visible(text)]
    if left:
        raise ValueError(f"{readme}: the card still shows placeholder text ({', '.join(left)})")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return {"repo_id": repo_id, "folder": str(out), "license": card.license, "parameters": counts,
            "files": files, "bytes": sum((out / f).stat().st_size for f in files)}


def push(staged: dict[str, Any], *, private: bool = False, token: str | None = None,
         revision: str | None = None, commit_message: str | None = None) -> str:
    """Create the repository if needed and upload the staged folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(staged["repo_id"], private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=staged["repo_id"], folder_path=staged["folder"], repo_type="model",
                             revision=revision, commit_message=commit_message or "Upload ragcun model")
    return str(getattr(info, "commit_url", info))
