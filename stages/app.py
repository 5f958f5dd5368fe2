"""The Typer app every stage registers on, and the pieces every stage shares (params option, error handling)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from pipeline.config import from_dict
from pipeline.errors import HydraMixError

T = TypeVar("T")

app = typer.Typer(
    name="hydramix",
    help="HydraMix: turn a tiny labelled image set into a large, reproducible synthetic training set, "
    "and prove it helps. Each command is one DVC stage; `dvc repro` runs them in order.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ParamsOption = Annotated[
    Path, typer.Option("--params", help="params.yaml to read this stage's section from.", show_default=True)
]


def stage(name: str, summary: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as command ``name``; a HydraMixError becomes 'error: ...' on stderr and exit code 1.

    summary: the one-line purpose `hydramix --help` lists; help: the full description of `hydramix NAME --help`.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except HydraMixError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                typer.echo("interrupted; no partial output was left under a final name", err=True)
                raise typer.Exit(130) from None

        app.command(name=name, help=help, short_help=summary)(run)
        return fn

    return decorate


def load_section(params_path: Path, section: str, cls: type[T]) -> T:
    """Read ``section`` of the YAML file ``params_path`` into the frozen config dataclass ``cls``."""
    if not params_path.is_file():
        raise HydraMixError(f"params file {params_path} not found (pass --params PATH)")
    try:
        data = yaml.safe_load(params_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HydraMixError(f"{params_path}: not valid YAML ({exc})") from None
    if section not in data:
        raise HydraMixError(f"{params_path}: has no '{section}' section")
    return from_dict(cls, data[section], where=f"{params_path}:{section}")


def parse_n_sources(text: str | None, flag: str) -> tuple[int, int] | None:
    """``"N"`` or ``"MIN,MAX"`` from the command line -> (min, max); None stays None (flag not given)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise HydraMixError(f"{flag} must be N or MIN,MAX (integers), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise HydraMixError(f"{flag} must be N or MIN,MAX, got {text!r}")
    return values
