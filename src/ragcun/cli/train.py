"""`ragcun train` and `ragcun preflight`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ragcun.cli.app import USER_ERRORS, app, console, data_dir_option, device_option, fail


def _config(config: Path | None, overrides: list[str], **flags):
    """The config file, then ``--set``, then the named flags: all parsed once, by ``load_config``."""
    from ragcun.training.config import load_config

    sets = list(overrides or [])
    for key, value in flags.items():
        if value is not None:
            sets.append(f"{key}={value}" if not isinstance(value, bool)
                        else f"{key}={'true' if value else 'false'}")
    try:
        return load_config(config, sets)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None


@app.command()
def train(
    config: Path = typer.Argument(None, help="TOML config (configs/*.toml); every key can be overridden."),
    set_: list[str] = typer.Option(None, "--set", "-s",
                                   help="Override a config key: --set lambda_isotropy=0 (repeatable)."),
    train_data: str = typer.Option(None, help="Training triplets (`ragcun data triplets` output)."),
    validation_data: str = typer.Option(None, help="Validation mini-BEIR folder or BEIR name."),
    base_model: str = typer.Option(None, help="Base sentence-transformers model (alias, path or Hub id)."),
    output_dir: str = typer.Option(None, "--output-dir", "-o",
                                   help="Where checkpoints, best/, final/ and logs go."),
    num_train_epochs: float = typer.Option(None, help="Training epochs."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps (overrides epochs)."),
    per_device_train_batch_size: int = typer.Option(None, help="Training batch per process."),
    lambda_isotropy: float = typer.Option(None, help="Weight of SIGReg (0 = baseline)."),
    freeze_base: bool = typer.Option(None, "--freeze-base/--no-freeze-base", metavar="",
                                     help="Train the head only (fast cached path)."),
    bf16: bool = typer.Option(None, "--bf16/--no-bf16", metavar="", help="Train in bf16 mixed precision."),
    seed: int = typer.Option(None, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", metavar="",
                                help="Continue from the last complete checkpoint in output_dir."),
    launch: str = typer.Option("no",
                               help="'auto': run under torchrun on every visible GPU; N: N processes; 'no'."),
    data_dir: str = data_dir_option(),
    device: str = device_option(),
) -> None:
    """Train a Gaussian encoder (contrastive + λ·SIGReg) with sentence-transformers' trainer."""
    use_cpu = None
    if device is not None:  # the trainer places the model: cpu, or the GPU it is shown
        use_cpu = device == "cpu"
        if device.startswith("cuda:") and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    cfg = _config(config, set_, train_data=train_data, validation_data=validation_data, base_model=base_model,
                  output_dir=output_dir, num_train_epochs=num_train_epochs, max_steps=max_steps,
                  per_device_train_batch_size=per_device_train_batch_size, lambda_isotropy=lambda_isotropy,
                  freeze_base=freeze_base, bf16=bf16,
                  seed=seed, resume=True if resume else None, data_dir=data_dir, use_cpu=use_cpu)
    from ragcun.training.launch import plan_launch, relaunch

    try:
        nproc = plan_launch(launch)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if nproc:
        raise typer.Exit(relaunch(nproc, sys.argv[1:]))

    from ragcun.distributed import is_main_process
    from ragcun.training.trainer import train as run_train

    try:
        summary = run_train(cfg)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if summary and is_main_process():
        best = summary["best"]
        chosen = (f"best {best['metric']}={best['score']} at step {best['step']}"
                  if best["metric"] is not None else "best = the final model (no validation during training)")
        console.print(
            f"[green]done[/] in {summary['wall_time_s']:.0f}s, {summary['global_steps']} steps, "
            f"{summary['samples_per_second']:.1f} samples/s; {chosen}\n"
            f"best model: {summary['best_model']}\nsummary:    {Path(cfg.output_dir) / 'train_summary.json'}"
        )


@app.command()
def preflight(
    config: Path = typer.Argument(None, help="TOML config to check (data, model, a real training step)."),
    set_: list[str] = typer.Option(None, "--set", "-s", help="Override a config key (repeatable)."),
    steps: int = typer.Option(2, "--steps", help="Real training steps to run on a tiny batch (per arm)."),
) -> None:
    """Check GPUs, disk, dependencies, the config's data and model, and run two real training steps.

    On an experiment config (configs/demo.toml, configs/paper.toml) it checks the triplet sources and
    evaluation datasets, builds a few triplets as the run would, and runs the steps for every arm.
    """
    from ragcun.training.preflight import print_report, run_preflight

    if steps < 1:
        raise fail(f"--steps must be >= 1, got {steps}")
    try:
        from ragcun.experiment.preflight import is_experiment_config, run_experiment_preflight

        experiment = config is not None and is_experiment_config(config)
        if experiment:
            from ragcun.experiment import load_experiment

            results = run_experiment_preflight(load_experiment(config), steps=steps, overrides=set_)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    if not experiment:
        results = run_preflight(_config(config, set_), steps=steps)
    print_report(results, console)
    if any(r.status == "fail" for r in results):
        raise typer.Exit(1)
