"""``ragcun experiment run``: the three-arm ablation end to end."""

from __future__ import annotations

import typer

from ragcun.cli.app import app, console, fail

experiment_app = typer.Typer(help="The three-arm ablation: baseline / isotropy / frozen (+ the base model).",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("run")
def run(
    config: str = typer.Argument(..., help="Experiment TOML (e.g. configs/demo.toml)."),
    arm: list[str] = typer.Option(None, "--arm", help="Run only these arms (repeatable)."),
    parallel: bool = typer.Option(False, "--parallel", help="Train arms at once, one process (and GPU) each."),
    set_: list[str] = typer.Option(None, "--set", help="Override a training key for every arm: key=value."),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory (default $RAGCUN_DATA_DIR or ./data)."),
    output_dir: str = typer.Option(None, "--output-dir", help="Override [experiment] output_dir."),
    train_only: bool = typer.Option(False, "--train-only", help="Stop after training (used by --parallel)."),
) -> None:
    """Build the data, train every arm, evaluate all models on BEIR, measure isotropy and print the report.

    Finished stages are skipped, so re-running resumes a killed experiment.
    """
    from ragcun.experiment import ExperimentError, run_experiment
    from ragcun.training.config import ConfigError

    try:
        rep = run_experiment(config, overrides=set_ or [], arms=arm or None, parallel=parallel, train_only=train_only,
                             data_dir=data_dir, output_dir=output_dir)
    except (ExperimentError, ConfigError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    if rep:
        tables = rep.get("tables", {})
        for title, key in (("NDCG@10 (x100)", "ndcg@10"), ("Paired significance vs the baseline", "significance"),
                           ("Isotropy", "isotropy")):
            if key in tables:
                console.rule(title)
                console.print(tables[key], markup=False, highlight=False, soft_wrap=True)
        report_md = rep.get("files", {}).get("report.md")
        if report_md:
            console.print(f"[green]full report:[/] {report_md}")
