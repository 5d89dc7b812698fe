"""`notmnist <command> [settings]` (or `python -m pipeline <command> ...`): the one command kernel.

It picks the command from the table (`pipeline.cli.commands`; no command, or a first word
that is a setting, trains, so `python -m pipeline model=logreg` works as it always has),
answers `--help` from the command's typed config, makes the process-wide settings, runs the
command, and is the one place that turns an error into its line and exit code
(`pipeline.errors`): commands raise, they never print-and-exit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from pipeline import process
from pipeline.cli.commands import COMMANDS, DEFAULT, Command
from pipeline.errors import ConfigError, PipelineError

log = logging.getLogger("pipeline")

_HELP = ("--help", "-h")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script `notmnist`, and `python -m pipeline`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--help"], ["-h"], ["help"]):
        _say(_overview())
    if args[:1] == ["--version"]:
        import pipeline

        _say(f"notmnist {pipeline.__version__}")
    command, rest = pick(args)
    if any(arg in _HELP for arg in rest):
        from pipeline.cli.help import command_help

        _say(command_help(command))
    process.configure()
    process.filter_native_noise()
    process.exit_now(run(command, rest))


def pick(args: list[str]) -> tuple[Command, list[str]]:
    """The command the first word names, and the rest; no command word means `train`."""
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]], args[1:]
    if args and "=" not in args[0] and not args[0].startswith("-"):
        known = ", ".join(COMMANDS)
        _fail(ConfigError(f"no command {args[0]!r}: notmnist has {known} (notmnist --help)"))
    return COMMANDS[DEFAULT], args


def run(command: Command, args: list[str]) -> int:
    """Run one command in this process (its settings made): its exit code, its error said
    in one line on standard error."""
    code = 0
    try:
        code = command.function()(args) or 0
    except PipelineError as exc:
        code = _report(exc)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into it: the runs ended KILLED
        code = _report(_interrupted())
    except SystemExit as exc:  # Hydra's own --info, --cfg, -sc ... end this way
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    finally:
        from pipeline.tracking.recording import recorder

        recorder.close()
    return code


def _interrupted() -> PipelineError:
    from pipeline.errors import StoppedError

    return StoppedError("stopped by Ctrl-C or SIGTERM; the runs it had open are marked KILLED")


def _report(exc: PipelineError) -> int:
    line = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{exc.kind}: {line}", file=sys.stderr, flush=True)
    return exc.exit_code


def _overview() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    return (
        "notmnist: train regularised fully connected networks on notMNIST letters (A-J), "
        "tracked in MLflow,\nwith retraining, a registry and a server for the champion.\n\n"
        "Usage: notmnist <command> [settings]   (python -m pipeline <command> ... is the same;\n"
        "       with no command, notmnist [settings] trains)\n\n"
        f"Commands:\n{rows}\n\n"
        "notmnist <command> --help shows the command's settings, their defaults and allowed "
        "values."
    )


def _say(text: str) -> NoReturn:
    print(text)
    process.exit_now(0)


def _fail(exc: PipelineError) -> NoReturn:
    process.exit_now(_report(exc))


if __name__ == "__main__":
    main()
