"""Tables in Markdown, LaTeX (booktabs) and CSV, from one list of rows."""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any


def _fmt(v: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * scale:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fmt_p(p: float | None) -> str:
    """A p-value as a paper prints it: four decimals, and "< 0.0001" rather than 0.0000."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


#: Characters the reports use that plain LaTeX (without unicode packages) cannot typeset.
_LATEX_UNICODE = (("λ_iso", r"$\lambda_{\mathrm{iso}}$"), ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"),
                  ("τ", r"$\tau$"), ("×", r"$\times$"), ("−", "$-$"), ("–", "--"), ("—", "---"),
                  ("±", r"$\pm$"), ("≤", r"$\le$"), ("≥", r"$\ge$"), ("√", r"$\surd$"), ("·", r"$\cdot$"),
                  ("†", r"$^\dagger$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("‖", r"$\|$"),
                  ("<", r"$<$"), (">", r"$>$"))


def _latex_escape(s: str) -> str:
    s = s.replace("λ_iso", "λ\x00iso")  # the subscript survives the escaping of "_"
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b)
    s = s.replace(r"\textbackslash\{\}", r"\textbackslash{}").replace("λ\x00iso", "λ_iso")
    return _latex_unicode(re.sub(r"(?<![\w.])-(?=\.?\d)", "−", s))  # a negative number's sign is a minus


def _latex_unicode(s: str) -> str:
    """Only the Unicode mapping: for captions, which may already hold LaTeX (``$\\times$``)."""
    for a, b in _LATEX_UNICODE:
        s = s.replace(a, b)
    return s


def latex_table(header: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    """A booktabs table (``table*`` when too wide for one column); cells may carry ``**x**`` (bold) and ``†``
    (significance) from the Markdown. Negative numbers get a math minus, ``λ_iso`` a real subscript."""

    def cell(c: str) -> str:
        dag = c.endswith("†")
        c = c.rstrip("†")
        bold = c.startswith("**") and c.endswith("**")
        c = _latex_escape(c.strip("*"))
        c = rf"\textbf{{{c}}}" if bold else c
        return c + (r"$^\dagger$" if dag else "")

    cols = "l" + "r" * (len(header) - 1)
    # wider than one column of a two-column paper (about 50 characters of cells): span both
    env = "table*" if len(header) > 6 or max(len("  ".join(r)) for r in [header, *rows]) > 50 else "table"
    lines = [rf"\begin{{{env}}}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_unicode(caption)}}}",
              rf"\label{{{label}}}", rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def delta_cells(test: dict[str, float] | None) -> tuple[str, str]:
    """A paired test as two table cells: the mean difference ×100 with its 95% CI, and the p-value."""
    if not test:
        return "–", "–"
    return (f"{test['mean_diff'] * 100:+.2f} [{test['ci_low'] * 100:+.2f}, {test['ci_high'] * 100:+.2f}]",
            fmt_p(test["perm_p"]))
