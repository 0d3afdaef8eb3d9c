"""The comparison report: significance against scipy and exact enumeration, tables, files, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ragcun.files import write_json
from ragcun.reporting import build_report, paired_test


def test_randomisation_test_matches_exact_enumeration():
    diffs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # all 2^5 sign patterns: only all-plus and all-minus reach |sum| = 15 -> exact p = 2/32
    exact = np.mean([abs(np.dot(s, diffs)) >= 15 for s in itertools.product([-1, 1], repeat=5)])
    res = paired_test(diffs, np.zeros(5), n_permutations=20_000, seed=1)
    assert exact == 2 / 32
    assert res["perm_p"] == pytest.approx(exact, abs=0.01)
    assert (res["wins"], res["ties"], res["losses"]) == (5, 0, 0)


def test_t_test_and_confidence_interval_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    res = paired_test(a, b, n_permutations=2000)
    t = stats.ttest_rel(a, b)
    assert res["t_p"] == pytest.approx(t.pvalue)
    d = a - b
    half = stats.t.ppf(0.975, 49) * d.std(ddof=1) / np.sqrt(50)
    assert res["ci_low"] == pytest.approx(d.mean() - half)
    assert res["ci_high"] == pytest.approx(d.mean() + half)
    assert 0 < res["perm_p"] <= 1


def _result(path, model, score, shift, n_q=40, seed=0):
    rng = np.random.default_rng(seed)
    per_query, results = {}, {}
    for ds in ("scifact", "nfcorpus"):
        vals = np.clip(rng.random(n_q) * 0.6 + shift, 0, 1)
        per_query[ds] = {f"q{i}": {"ndcg@10": float(v), "recall@100": float(min(1, v + 0.2))}
                         for i, v in enumerate(vals)}
        results[ds] = {"ndcg@10": float(vals.mean()), "recall@100": float(np.minimum(1, vals + 0.2).mean())}
    write_json(path, {"model": model, "score": score, "results": results, "per_query": per_query})
    return path


def test_build_report_tables_and_files(tmp_path):
    base = _result(tmp_path / "base.json", "all-MiniLM-L6-v2", "cos", 0.0, seed=0)
    # same noise, +0.3: significant
    better = _result(tmp_path / "iso.json", "/runs/iso/final", "l2", 0.3, seed=0)
    iso = tmp_path / "isotropy.json"
    write_json(iso, {"results": [{"label": "iso", "dataset": "scifact", "kind": "corpus", "isoscore": 0.93,
                                  "cov_error_rel": 0.1, "is_isotropic": True}]})
    out = tmp_path / "report"
    s = build_report([str(base), str(better)], out, isotropy_files=[str(iso)], n_permutations=2000)
    assert s["models"] == ["all-MiniLM-L6-v2", "final"] and s["baseline"] == "all-MiniLM-L6-v2"
    sig = s["significance"]["scifact"]["final"]
    assert sig["mean_diff"] == pytest.approx(0.3, abs=0.02) and sig["perm_p"] < 0.01 and sig["t_p"] < 1e-6
    md = s["markdown"]
    assert "| Model | scifact | nfcorpus | Avg |" in md
    assert "†" in md and "**" in md
    assert "+30.00" in md or "+29." in md or "+30." in md
    for f in ("report.md", "ndcg_at_10.md", "ndcg_at_10.tex", "results.csv", "significance.csv",
              "isotropy.csv", "ndcg_at_10.png", "report.json"):
        assert (out / f).exists(), f
    tex = (out / "ndcg_at_10.tex").read_text()
    assert "\\toprule" in tex and "$^\\dagger$" in tex and "\\textbf{" in tex
    assert "all-MiniLM-L6-v2,cos,scifact,ndcg@10" in (out / "results.csv").read_text()
    assert "## Isotropy" in (out / "report.md").read_text()
    # † in every metric table (each on its own per-query values), p-values as a paper prints them
    assert "†" in (out / "recall_at_100.md").read_text()
    assert "< 0.0001" in (out / "significance.tex").read_text().replace("$<$", "<")
    assert all(ord(c) < 128 for c in (out / "isotropy.tex").read_text())  # no raw Unicode inside tabular
    assert "IsoScore ↑" in (out / "isotropy.md").read_text()
    # one dataset: no "Avg" column that only repeats it
    one = tmp_path / "one.json"
    write_json(one, {**json.loads(better.read_text()),
                     "results": {"scifact": json.loads(better.read_text())["results"]["scifact"]},
                     "per_query": {"scifact": json.loads(better.read_text())["per_query"]["scifact"]}})
    s1 = build_report([str(one)], tmp_path / "r1", n_permutations=200, plots=False)
    assert "Avg" not in s1["markdown"]
    # a chosen baseline flips the direction
    s2 = build_report([str(base), str(better)], tmp_path / "r2", baseline="final", n_permutations=500,
                      plots=False)
    assert s2["significance"]["scifact"]["all-MiniLM-L6-v2"]["mean_diff"] < 0


def test_report_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        build_report([str(bad)], tmp_path / "o")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="other.json: not a ragcun results file"):
        build_report([str(other)], tmp_path / "o")
    good = _result(tmp_path / "g.json", "m", "cos", 0.0)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        build_report([str(good)], tmp_path / "o", baseline="nope")


def test_report_cli(tmp_path):
    from typer.testing import CliRunner

    from ragcun.cli import app

    a = _result(tmp_path / "a.json", "model-a", "cos", 0.0, seed=1)
    b = _result(tmp_path / "b.json", "model-b", "l2", 0.05, seed=2)
    res = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "rep"),
                                   "--permutations", "500", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "model-a" in res.output and "NDCG@10" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 1 and "missing.json" in res.output


def test_latex_tables_use_math_minus_a_real_subscript_and_span_when_wide():
    from ragcun.reporting.tables import latex_table

    tex = latex_table(["Model", "Δ"], [["frozen (λ_iso = 0.3)", "-2.81†"], ["run_1", "1e-4"]],
                      "λ_iso −1", "tab:x")
    assert r"$\lambda_{\mathrm{iso}}$ = 0.3" in tex and r"$-$2.81$^\dagger$" in tex and r"run\_1" in tex
    assert "1e-4" in tex and r"\begin{table}[t]" in tex and r"\caption{$\lambda_{\mathrm{iso}}$ $-$1}" in tex
    wide = latex_table([f"c{i}" for i in range(8)], [[str(i) for i in range(8)]], "wide", "tab:w")
    assert wide.startswith(r"\begin{table*}[t]") and wide.rstrip().endswith(r"\end{table*}")


def test_metric_chart_axis_resolves_half_points(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ragcun.evaluation.plots import metric_bar_chart

    captured = {}
    real_save = plt.Figure.savefig

    def keep(fig, *a, **k):
        captured["ax"] = fig.axes[0]
        return real_save(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        metric_bar_chart({"nfcorpus": {"reference": 0.3145, "frozen": 0.2864}}, tmp_path / "c.png",
                         errors={"nfcorpus": {"reference": 0.034, "frozen": 0.033}})
    finally:
        plt.Figure.savefig = real_save
    ax = captured["ax"]
    lo, hi = ax.get_ylim()
    assert 20 < lo < 25.4 and 35 < hi < 40  # the data's span, not from zero
    ticks = np.sort(np.concatenate([ax.yaxis.get_majorticklocs(), ax.yaxis.get_minorticklocs()]))
    assert np.allclose(np.diff(ticks[(ticks > lo) & (ticks < hi)]), 0.5)  # a grid line every half point
    assert (tmp_path / "c.png").stat().st_size > 5_000
