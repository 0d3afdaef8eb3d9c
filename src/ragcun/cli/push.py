"""``ragcun push MODEL REPO_ID``: a trained model on the Hugging Face Hub, with a complete model card."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import typer

from ragcun.cli.app import USER_ERRORS, app, console, fail


@app.command("push")
def push(
    model: Path = typer.Argument(..., help="A saved model folder (runs/demo/arms/frozen/best)."),
    repo_id: str = typer.Argument(..., help="The Hub repository, owner/name."),
    license: str = typer.Option(None, "--license",
                                help="The card's license (default: the base model's, when known)."),
    private: bool = typer.Option(False, "--private", metavar="", help="Create the repository as private."),
    to: Path = typer.Option(None, "--to",
                            help="Write what would be uploaded into this folder instead of uploading."),
    dry_run: bool = typer.Option(False, "--dry-run", metavar="",
                                 help="Prepare and list the files; upload nothing."),
    revision: str = typer.Option(None, "--revision", help="The branch to commit to (default: main)."),
    message: str = typer.Option(None, "--message", help="The commit message."),
) -> None:
    """Upload a model with its card filled in (repository id, license, parameters, base model, test results).

    The token comes from HF_TOKEN (environment or .env) or `huggingface-cli login`.
    """
    from ragcun import hub

    if not model.is_dir():
        raise fail(f"MODEL {model}: no such model folder")
    if license is not None and not license.strip():
        raise fail("--license is empty: give the license's Hub id (apache-2.0, mit, ...), or leave it out "
                   "for the base's")
    if to is not None and to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise fail(f"--to {to} exists and is not an empty folder")
    work = to if to is not None else Path(tempfile.mkdtemp(prefix="ragcun-push-")) / "model"
    try:
        staged = hub.stage(model, repo_id, work, license=license)
        console.print(f"{staged['repo_id']}: {len(staged['files'])} files, {staged['bytes'] / 1e6:.1f} MB, "
                      f"license {staged['license']}, {staged['parameters']['total']:,} parameters",
                      highlight=False)
        if to is not None or dry_run:
            for f in staged["files"]:
                console.print(f"  {f}", highlight=False)
            console.print(f"nothing uploaded; the folder is {work}" if to is not None
                          else "dry run: nothing uploaded", highlight=False)
            return
        from ragcun.resolve import load_dotenv_keys

        load_dotenv_keys()
        try:
            url = hub.push(staged, private=private, revision=revision, commit_message=message)
        except Exception as exc:  # noqa: BLE001 - network, auth and Hub errors: one line, never a traceback
            from huggingface_hub import constants

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise fail(f"upload to {constants.ENDPOINT}/{repo_id} failed: {first}") from None
        console.print(f"uploaded: {url}", highlight=False)
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    finally:
        if to is None:
            shutil.rmtree(work.parent, ignore_errors=True)
