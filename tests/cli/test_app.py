"""The `ragcun` command as a whole: --version, and help text for every option of every command."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

import ragcun
from ragcun.cli import app


def _commands(cmd, path: str = "ragcun"):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"ragcun {ragcun.__version__}"


def test_every_option_has_help_and_every_command_a_docstring():
    root = typer.main.get_command(app)
    missing = []
    seen = 0
    for path, cmd in _commands(root):
        if not (cmd.help or "").strip():
            missing.append(path)
        for p in cmd.params:
            if type(p).__name__.endswith("Option") and p.name != "help":
                seen += 1
                if not (p.help or "").strip():
                    missing.append(f"{path} {p.opts[0]}")
    assert seen > 50, seen  # the walk really reached the commands
    assert not missing, f"no help text: {missing}"
    flags = [f"{path} {p.opts[0]}" for path, cmd in _commands(root) for p in cmd.params
             if getattr(p, "is_flag", False) and p.name not in ("help",) and p.metavar != ""]
    assert not flags, f"flags that --help would show with a <bool> placeholder: {flags}"


def test_shared_encoding_options_have_one_help_text():
    """--batch-size, --max-seq-length, --runtime, --precision, --device, --data-dir, --no-cache, --split (BEIR
    test default) are declared once (ragcun.cli.app) and read the same in every command that has them."""
    root = typer.main.get_command(app)
    helps: dict[str, set[str]] = {}
    users: dict[str, int] = {}
    for _, cmd in _commands(root):
        for p in cmd.params:
            flag = p.opts[0] if p.opts else ""
            if flag in ("--batch-size", "--max-seq-length", "--runtime", "--precision", "--device",
                        "--data-dir", "--no-cache") or (flag == "--split" and p.default == "test"):
                helps.setdefault(flag, set()).add((p.help or "").replace(" Kept in the index.", ""))
                users[flag] = users.get(flag, 0) + 1
    assert users["--max-seq-length"] >= 5 and users["--data-dir"] >= 5 and users["--batch-size"] >= 5, users
    drifted = {flag: texts for flag, texts in helps.items() if len(texts) > 1}
    assert not drifted, drifted
