"""The CLI as a user runs it, in-process: exit code, stdout and stderr."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from promptrec.cli.main import main

RunCli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def cli(capsys) -> RunCli:
    """``cli(["train", ...])`` runs ``promptrec train ...`` and returns (code, out, err)."""

    def run(args: list[str]) -> tuple[int, str, str]:
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
