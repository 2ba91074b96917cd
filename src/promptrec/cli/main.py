"""Entry point: ``promptrec <command>``. User errors print one line and exit with code 2."""

from __future__ import annotations

import os
import sys
import traceback

import typer
from typer._click.exceptions import ClickException

from promptrec.cli import data_cmds, demo, evaluate, recommend, serve, train

app = typer.Typer(
    name="promptrec",
    help="Product recommendation with language models and prompt strategies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("ingest")(data_cmds.ingest)
app.command("embed")(data_cmds.embed)
app.command("recommend")(recommend.recommend)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors exit 2 with a one-line message (traceback with -v)."""
    from pydantic import ValidationError

    from promptrec.errors import PromptrecError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    verbose = "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv)
    try:
        # outside standalone mode typer returns an Exit's code (Ctrl-C is Exit(130)), never
        # raises it
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                typer.echo("interrupted", err=True)
            sys.exit(code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except ClickException as exc:  # usage errors: bad option, missing argument, no command
        exc.show()
        sys.exit(2)
    except (PromptrecError, ValidationError, FileNotFoundError, IsADirectoryError) as exc:
        if verbose:
            traceback.print_exc()
        message = str(exc).splitlines()[0] if isinstance(exc, ValidationError) else str(exc)
        if isinstance(exc, ValidationError):
            errors = exc.errors()
            message = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                for e in errors
            )
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
