"""The Typer app every stage registers on, and the pieces every stage shares (params option, error handling).

Start-up is kept light: ``COMMANDS`` lists every command with its one-line summary, so ``hydramix --help``,
``--version`` and shell completion of command names import no stage; a stage module, and torch or whatever else
it needs, is imported only when its command runs or shows its own help (``StageGroup``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from pipeline.core.errors import HydraMixError

T = TypeVar("T")

# Every command, in pipeline order (the order `hydramix --help` lists them in), with the one-line summary that
# list shows. Command NAME lives in module stages.NAME (dashes as underscores), as its DVC stage is NAME.
COMMANDS: dict[str, str] = {
    "prepare": "Download or read a dataset into train/test Parquet.",
    "subset": "Draw k images per class (seeded, nested).",
    "train-generator": "Train the HydraMix generator on a subset.",
    "synthesize": "Write a synthetic dataset as WebDataset shards.",
    "verify": "Check a synthetic dataset against its manifest.",
    "gallery": "Write one static HTML page picturing a synthetic dataset.",
    "score": "Score real and synthetic sets with CLIP Synset Entropy.",
    "train-classifier": "Train a classifier from scratch with one method.",
    "evaluate": "Measure a trained classifier on the full test split.",
    "report": "Aggregate evaluations into a results table and plot.",
}


def stage_module(name: str) -> str:
    """The module that registers command ``name``: ``train-generator`` -> ``stages.train_generator``."""
    return "stages." + name.replace("-", "_")


class StageCommand(TyperCommand):
    """A stage's command: options without an explicit ``metavar`` show a word (``--subset PATH``, ``--k N``,
    ``--device DEVICE``) instead of Typer's Python types (``<path>``, ``<int range>``, ``<list[str]>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            is_option = getattr(param, "param_type_name", "") == "option"  # arguments already show a word
            if is_option and param.metavar is None and not getattr(param, "is_flag", False) and param.name:
                param.metavar = word_metavar(param.name, _type_label(param))


def _type_label(param: Any) -> str:
    """Typer's type label of ``param`` ("path", "int range", "list[str]", ...), or click's type name."""
    if hasattr(param, "display_type"):  # typer >= 0.20
        try:
            return param.display_type(None).strip("<>")
        except Exception:  # choices need a context; their label is not needed here
            return ""
    return getattr(getattr(param, "type", None), "name", "")


def word_metavar(name: str, type_label: str) -> str:
    """PATH for paths, N for integers, NUMBER for floats, else the option's name in capitals."""
    if type_label in ("path", "file", "directory", "dir"):
        return "PATH"
    if type_label.startswith(("int", "integer")):
        return "N"
    if type_label.startswith("float"):
        return "NUMBER"
    return name.upper().replace("_", "-")


class StageGroup(TyperGroup):
    """The ``hydramix`` group: commands from ``COMMANDS``, each module imported the first time it is needed."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(stage_module(cmd_name))
            info = next(c for c in app.registered_commands if c.name == cmd_name)
            self.commands[cmd_name] = typer.main.get_command_from_info(
                info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
            )
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [
            (name, COMMANDS.get(name) or self.commands[name].get_short_help_str()) for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        try:
            from typer.core import CompletionItem  # typer >= 0.20 vendors click
        except ImportError:  # pragma: no cover - older typer on click
            from click.shell_completion import CompletionItem
        names = [CompletionItem(n, help=s) for n, s in COMMANDS.items() if n.startswith(incomplete)]
        return names + super(TyperGroup, self).shell_complete(ctx, incomplete)  # the group's own options

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:  # a usage error: suggest among every command, loaded or not
            import difflib

            message = getattr(exc, "message", None)
            if message is not None and args and "Did you mean" not in message:
                matches = difflib.get_close_matches(args[0], list(COMMANDS))
                if matches:
                    exc.message = f"{message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"
            raise


app = typer.Typer(
    name="hydramix",
    cls=StageGroup,
    help="HydraMix: turn a tiny labelled image set into a large, reproducible synthetic training set, "
    "and prove it helps. Each command is one DVC stage; `dvc repro` runs them in order.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def version() -> str:
    """The installed hydramix version (the package's own when it is run from a checkout without installing)."""
    try:
        return importlib.metadata.version("hydramix")
    except importlib.metadata.PackageNotFoundError:
        from pipeline import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hydramix {version()}")
        raise typer.Exit()


@app.callback()
def _global_options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bars, progress lines or notices (results, warnings and errors still print). "
            "TQDM_DISABLE=1 in the environment does the same.",
        ),
    ] = False,
) -> None:
    from pipeline.core import progress

    progress.set_quiet(quiet)  # set on every invocation, so one quiet run does not silence the next


ParamsOption = Annotated[
    Path, typer.Option("--params", help="params.yaml to read this stage's section from.", show_default=True)
]
ThreadsOption = Annotated[
    str | None,
    typer.Option(
        "--threads",
        metavar="N|auto",
        help="CPU threads: auto = the physical cores (OMP_NUM_THREADS when set; 1 per process under torchrun), "
        "or N. On a machine other work keeps busy use 1: contended threads can be many times slower.",
    ),
]


def stage(name: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as command ``name`` (a key of ``COMMANDS``, whose summary `hydramix --help` lists); a
    HydraMixError becomes 'error: ...' on stderr and exit code 1. help: the description of `hydramix NAME --help`.
    """
    if name not in COMMANDS:
        raise KeyError(f"command {name!r} is not in stages.app.COMMANDS")

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

        app.command(name=name, help=help, short_help=COMMANDS[name], cls=StageCommand)(run)
        return fn

    return decorate


def load_all() -> None:
    """Import every stage module, registering all commands (for tests and tools that inspect them)."""
    for name in COMMANDS:
        importlib.import_module(stage_module(name))


def load_section(params_path: Path, section: str, cls: type[T]) -> T:
    """Read ``section`` of the YAML file ``params_path`` into the frozen config dataclass ``cls``."""
    import yaml

    from pipeline.core.config import from_dict

    if not params_path.is_file():
        raise HydraMixError(f"params file {params_path} not found (pass --params PATH)")
    try:
        data = yaml.safe_load(params_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HydraMixError(f"{params_path}: not valid YAML ({exc})") from None
    if section not in data:
        raise HydraMixError(f"{params_path}: has no '{section}' section")
    return from_dict(cls, data[section], where=f"{params_path}:{section}")


def parse_threads(text: str | None, flag: str = "--threads") -> int | str | None:
    """``"auto"`` or ``"N"`` from the command line -> "auto" or N >= 1; None stays None (flag not given)."""
    if text is None or text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise HydraMixError(f"{flag} must be auto or an integer >= 1, got {text!r}")
    return int(text)


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


def existing_dir(path: Path, flag: str, what: str) -> Path:
    """``path`` if it is a directory; else HydraMixError saying whether it does not exist or is a file."""
    if not path.exists():
        raise HydraMixError(f"{flag} {path}: no such directory (expected {what})")
    if not path.is_dir():
        raise HydraMixError(f"{flag} {path}: is a file, not a directory (expected {what})")
    return path


def existing_file(path: Path, flag: str, what: str) -> Path:
    """``path`` if it is a file; else HydraMixError saying whether it does not exist or is a directory (naming a
    ``.pt`` file inside it where there is one)."""
    if not path.exists():
        raise HydraMixError(f"{flag} {path}: no such file (expected {what})")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pt"))
        hint = f"; did you mean {path / inside[0]}?" if len(inside) == 1 else ""
        raise HydraMixError(f"{flag} {path}: is a directory, not a file (expected {what}){hint}")
    return path
