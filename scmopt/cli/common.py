"""What every command shares: one-line errors, CLI flag names in messages, closed pipes."""

from __future__ import annotations

import os
import re
import sys
import traceback

import click

from scmopt.errors import ScmoptError


def fail(exc: BaseException, verbose: bool, hint: str = "") -> None:
    """Exits with `exc` as one line (exit 2 for input errors, 1 for internal ones)."""
    if isinstance(exc, BrokenPipeError):  # `scmopt inspect M | head`: the reader stopped
        pipe_closed()
    if verbose:
        traceback.print_exc()
    if isinstance(exc, ScmoptError):
        click.echo(f"scmopt: error: {flags(str(exc))}{hint}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"scmopt: internal error: {type(exc).__name__}: {exc} (rerun with -v){hint}",
               err=True)  # fmt: skip
    sys.exit(1)


def flags(message: str) -> str:
    """API argument names in a message (`keep=0.01 leaves ...`) as the CLI flags (`--keep`)."""
    api = "budget|min_fidelity|min_iia|keep_heads|keep|flops|batch_size|align|swap_p"
    names = rf"\b({api})\b(?==| must)"
    return re.sub(names, lambda m: "--" + m[1].replace("_", "-"), message)


def pipe_closed() -> None:
    """Exits quietly (0) when stdout's reader has gone; later flushes go to /dev/null."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (tests)
        pass
    sys.exit(0)


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
