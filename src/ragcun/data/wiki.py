"""Clean Wikipedia passages for unsupervised training.

Input: the Hugging Face ``wikimedia/wikipedia`` dataset (online; ``<date>.<language>`` config), or a
local file of articles: JSONL (``{"title", "text"}`` per line, the HF dataset's own columns; ``.gz``
accepted) or Parquet. Output: JSONL passages ``{"id", "title", "text"}``, written atomically, plus
``<out>.manifest.json``.

The HF dump is already plain text, but local dumps (and the older ``wikipedia`` builder output)
often carry markup remnants: templates, links, bold/italic quotes, ref tags, headings, tables and
trailing "References"/"See also" sections. :func:`clean_wiki_text` removes them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ragcun.data.readers import DataFormatError, iter_jsonl, regular_file
from ragcun.files import atomic_path, write_json
from ragcun.progress import wanted

logger = logging.getLogger(__name__)

HF_DATASET = "wikimedia/wikipedia"
HF_DATE = "20231101"

_TAIL_SECTIONS = re.compile(
    r"^\s*=*\s*(References|See also|External links|Further reading|Notes|Bibliography|Sources)\s*=*\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.DOTALL | re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.DOTALL)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|Datei|Fichier|Kategorie|Catégorie):[^\[\]]*"
                        r"(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.IGNORECASE)
_LINK = re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://[^\s\]]+\s*([^\]]*)\]")
_HEADING = re.compile(r"^\s*=+[^=\n]*=+\s*$", re.MULTILINE)
_QUOTES = re.compile(r"'{2,}")
_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
_SPACES = re.compile(r"[ \t\u00a0]+")


def clean_wiki_text(text: str) -> str:
    """Strip wiki markup remnants and trailing reference sections; keep paragraphs (blank-line separated)."""
    m = _TAIL_SECTIONS.search(text)
    if m:
        text = text[: m.start()]
    text = _COMMENT.sub(" ", text)
    text = _REF.sub(" ", text)
    text = _TABLE.sub(" ", text)
    for _ in range(5):  # nested templates, innermost first
        new = _TEMPLATE.sub(" ", text)
        if new == text:
            break
        text = new
    text = _FILE_LINK.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _HEADING.sub("\n", text)
    text = _QUOTES.sub("", text)
    text = _LIST_MARK.sub("", text)
    text = text.replace("&nbsp;", " ").replace("&amp;", "&").replace("&ndash;", "–").replace("&mdash;", "—")
    lines = [_SPACES.sub(" ", ln).strip() for ln in text.split("\n")]
    paras, cur = [], []
    for ln in lines:
        if ln:
            cur.append(ln)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(p for p in paras if p)


def split_passages(text: str, max_words: int = 100, min_words: int = 20) -> list[str]:
    """Split into passages of at most ``max_words`` words, filling greedily paragraph by paragraph;
    drop passages shorter than ``min_words``."""
    out: list[str] = []
    cur: list[str] = []
    for para in text.split("\n\n"):
        words = para.split()
        while words:
            room = max_words - len(cur)
            cur.extend(words[:room])
            words = words[room:]
            if len(cur) >= max_words:
                out.append(" ".join(cur))
                cur = []
    if cur:
        out.append(" ".join(cur))
    return [p for p in out if len(p.split()) >= min_words]


def iter_local_articles(path: str | os.PathLike) -> Iterator[dict[str, str]]:
    """Articles ``{"title", "text"}`` from a JSONL(.gz) or Parquet file."""
    path = regular_file(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        for batch in table.iter_batches(columns=["title", "text"]):
            for row in batch.to_pylist():
                yield {"title": row.get("title") or "", "text": row.get("text") or ""}
        return
    for lineno, obj in iter_jsonl(path):
        if "text" not in obj:
            raise DataFormatError(path, "expected a JSON object with a `text` field", lineno)
        yield {"title": str(obj.get("title") or ""), "text": str(obj["text"] or "")}


def iter_hf_articles(language: str = "en", date: str = HF_DATE) -> Iterator[dict[str, str]]:
    """Stream articles from the HF ``wikimedia/wikipedia`` dataset (needs the Hub)."""
    import datasets

    ds = datasets.load_dataset(HF_DATASET, f"{date}.{language}", split="train", streaming=True)
    for row in ds:
        yield {"title": row.get("title") or "", "text": row.get("text") or ""}


def build_wiki_passages(
    out: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    language: str = "en",
    date: str = HF_DATE,
    max_words: int = 100,
    min_words: int = 20,
    num_passages: int | None = None,
    articles: Iterable[dict[str, str]] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Turn articles into clean passages (JSONL ``{"id", "title", "text"}``); return the manifest.

    ``source``: a local article file; None streams the HF dataset for ``language``.
    """
    from tqdm.auto import tqdm

    if max_words < 1 or min_words < 0 or min_words > max_words:
        raise ValueError("need 1 <= max_words and 0 <= min_words <= max_words")
    if articles is None:
        articles = iter_local_articles(source) if source else iter_hf_articles(language, date)
    out = Path(out)
    n_articles = n_pass = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        bar = tqdm(total=num_passages, desc="passages", unit="p", disable=not wanted(show_progress))
        with bar:
            for art in articles:
                n_articles += 1
                for i, p in enumerate(split_passages(clean_wiki_text(art["text"]), max_words, min_words)):
                    fh.write(json.dumps({"id": f"{n_articles - 1}-{i}", "title": art["title"], "text": p},
                                        ensure_ascii=False) + "\n")
                    n_pass += 1
                    bar.update(1)
                    if num_passages and n_pass >= num_passages:
                        break
                if num_passages and n_pass >= num_passages:
                    break
    manifest = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": str(source) if source else f"hf://{HF_DATASET}/{date}.{language}",
        "language": language, "max_words": max_words, "min_words": min_words, "num_passages": num_passages,
        "articles": n_articles, "passages": n_pass, "output": str(out),
    }
    write_json(out.with_name(out.name + ".manifest.json"), manifest)
    logger.info("%d passages from %d articles -> %s", n_pass, n_articles, out)
    return manifest
