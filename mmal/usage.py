"""Usage errors as one line on stderr with exit status 2, never a traceback or a boxed panel.

Why: a researcher who mistypes ``--suite quik`` or ``--strategies entopy`` needs the flag, the value
and what is allowed, in one line a script can grep; a 24-line traceback hides it. Every ``mmal``
command group uses :class:`OneLineErrors`: click's own parsing errors (``--rounds abc``), the
``typer.BadParameter`` our commands raise, and the project's :class:`~backend.data.DataError` (bad
input found while checking values: an unknown suite, strategy, file or column) all end the same way.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn, Sequence

import typer
from typer.core import TyperGroup

try:  # typer >= 0.22 ships its own copy of click; its commands raise that copy's exceptions
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover - older typer on the real click
    import click.exceptions as cx  # type: ignore[no-redef]

__all__ = ["OneLineErrors", "bad_value", "one_line"]


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def bad_value(flag: str, value: Any, allowed: str) -> NoReturn:
    """Raise the usage error for ``flag`` given ``value``: ``--flag 'value': <what is allowed>``."""
    raise typer.BadParameter(f"{flag} {value!r}: {allowed}")


def _given(param: Any, args: Sequence[str]) -> str | None:
    """The value the user typed for ``param`` (``--rounds abc`` or ``--rounds=abc``), if it can be found."""
    opts = list(getattr(param, "opts", []) or []) + list(getattr(param, "secondary_opts", []) or [])
    for i, a in enumerate(args):
        for o in opts:
            if a == o and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(o + "="):
                return a[len(o) + 1:]
    return None


def _usage_message(e: cx.UsageError, args: Sequence[str]) -> str:
    if isinstance(e, cx.MissingParameter):
        return one_line(e.format_message())
    if isinstance(e, cx.BadParameter) and e.param is not None:
        hint = e.param_hint if isinstance(e.param_hint, str) else None
        flag = hint or (e.param.opts[0] if getattr(e.param, "opts", None) else e.param.name)
        value = _given(e.param, args)
        shown = f"{flag} {value!r}" if value is not None else str(flag)
        return f"{shown}: {one_line(e.message)}"
    if isinstance(e, cx.BadParameter):
        return one_line(e.message)
    return one_line(e.format_message())


class OneLineErrors(TyperGroup):
    """A typer command group whose usage errors are one line on stderr and exit status 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        from backend.data import DataError

        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
        try:
            rv = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except cx.NoArgsIsHelpError:  # a bare group: its help, as typer shows it
            return super().main(args=argv, prog_name=prog_name, complete_var=complete_var, **extra)
        except cx.UsageError as e:
            typer.echo(f"Error: {_usage_message(e, argv)}", err=True)
            sys.exit(2)
        except cx.ClickException as e:
            typer.echo(f"Error: {one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except DataError as e:  # bad input found while checking a value (suite, strategy, file, column)
            typer.echo(f"Error: {one_line(str(e))}", err=True)
            sys.exit(2)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
