"""``ragcun experiment run`` (the three-arm ablation) and ``ragcun experiment sweep`` (the λ trade-off)."""

from __future__ import annotations

import typer

from ragcun.cli.app import (
    USER_ERRORS,
    app,
    console,
    data_dir_option,
    fail,
)

experiment_app = typer.Typer(help="The three-arm ablation (baseline / isotropy / frozen + the base model) "
                                  "and the λ sweep.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


def _print_tables(tables: dict[str, str]) -> None:
    for key, md in tables.items():
        kind, _, ds = key.partition(":")
        title = {"main": f"{ds}: NDCG@10 ×100 against the untouched reference and the baseline arm",
                 "views": f"{ds}: where the change lives (NDCG@10 ×100)",
                 "isotropy": f"{ds}: isotropy of the corpus embeddings",
                 "whitening": f"{ds}: post-hoc whitening of the untouched base (NDCG@10 ×100)",
                 "vs_whitening": f"{ds}: each arm against whitening at its own isotropy (NDCG@10 ×100)",
                 "approximate_search": "approximate search on the real embeddings (recall@10 vs exact)",
                 "sweep": "the λ sweep"}.get(kind, key)
        console.rule(title)
        console.print(md, markup=False, highlight=False, soft_wrap=True)


@experiment_app.command("run")
def run(
    config: str = typer.Argument(..., help="Experiment TOML (e.g. configs/demo.toml)."),
    arm: list[str] = typer.Option(None, "--arm", help="Run only these arms (repeatable)."),
    with_: list[str] = typer.Option(None, "--with", help="Also run this optional arm (\\[experiment] "
                                    "optional_arms; repeatable)."),
    parallel: bool = typer.Option(False, "--parallel", metavar="",
                                  help="Train arms at once, one process (and GPU) each."),
    set_: list[str] = typer.Option(None, "--set", "-s",
                                   help="Override a training key for every arm: key=value."),
    data_dir: str = data_dir_option(),
    output_dir: str = typer.Option(None, "--output-dir", help="Override \\[experiment] output_dir."),
    train_only: bool = typer.Option(False, "--train-only", metavar="",
                                    help="Stop after training the arms (no evaluation)."),
) -> None:
    """Build the data, train every arm, evaluate all models on BEIR, measure isotropy and print the report.

    Finished stages are skipped, so re-running resumes a killed experiment.
    """
    from ragcun.experiment import run_experiment

    try:
        rep = run_experiment(config, overrides=set_ or [], arms=arm or None, parallel=parallel,
                             train_only=train_only, data_dir=data_dir, output_dir=output_dir,
                             with_arms=with_ or None)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if rep:
        _print_tables(rep.get("experiment_tables", {}))
        console.print(
            f"full report: {rep['files'].get('report.md', '').replace('report.md', 'experiment.md')}",
            markup=False, highlight=False)


@experiment_app.command("sweep")
def sweep(
    config: str = typer.Argument(..., help="Experiment TOML whose arm is swept (e.g. configs/demo.toml)."),
    lambdas: str = typer.Option(None, "--lambdas",
                                help="Comma-separated λ_iso values (default: the \\[sweep] table's)."),
    arm: str = typer.Option(None, "--arm", help="The arm to sweep (default: \\[sweep] arm, else 'frozen')."),
    set_: list[str] = typer.Option(None, "--set", "-s",
                                   help="Override a training key for every λ: key=value."),
    data_dir: str = data_dir_option(),
    output_dir: str = typer.Option(None, "--output-dir", help="Override \\[experiment] output_dir."),
) -> None:
    """Train one arm per λ_iso and plot NDCG@10 (95% CI) against the corpus SIGReg ratio and IsoScore."""
    from ragcun.experiment import run_sweep

    values = None
    if lambdas:
        try:
            values = [float(v) for v in lambdas.split(",") if v.strip()]
        except ValueError:
            raise fail(f"--lambdas expects comma-separated numbers, got {lambdas!r}") from None
    try:
        summary = run_sweep(config, values, arm, set_ or [], data_dir, output_dir)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    _print_tables({"sweep": summary["markdown"]})
    console.print(f"figure: {summary['files']['sweep.png']}", markup=False, highlight=False)
