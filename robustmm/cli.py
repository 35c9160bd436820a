"""The ``robustmm`` command line (typer). Errors a user can cause exit with code 2 and one sentence."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from robustmm.errors import RobustMMError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Robustness of prompt-tuned vs finetuned vision-language models.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def root() -> None:
    """Robustness of prompt-tuned vs finetuned vision-language models."""


@app.command("list")
def list_command() -> None:
    """Show the datasets (and, as they land, attacks, presets and pairs) robustmm knows."""
    from robustmm.data import list_datasets

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("description")
    for name, description in list_datasets().items():
        table.add_row(name, description)
    console.print(table)


def main() -> None:
    """Console-script entry point: a RobustMMError becomes one line on stderr and exit code 2.

    typer itself turns usage errors (unknown option, bad value) into exit code 2.
    """
    try:
        app()
    except RobustMMError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; records written so far are kept.")
        sys.exit(130)


if __name__ == "__main__":
    main()
