"""The `hilprune` command. Each sub-command lives in its own module with a `register(app)`.

User mistakes (HilpruneError) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

import hwprofiler

from ..errors import HilpruneError

# Mistakes a user can fix (bad input, a device that cannot be reached, a model a device cannot
# take): one line on stderr, exit code 2, no traceback.
USER_ERRORS = (HilpruneError, hwprofiler.DeviceError, hwprofiler.InvalidModelError, hwprofiler.KernelError)

app = typer.Typer(
    name="hilprune",
    help="Hardware-in-the-loop structured pruning: find the layer-wise pruning policy that keeps the most "
    "accuracy under a latency budget measured on your target device, then export the pruned model to ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order is the order of `hilprune --help`.
COMMAND_MODULES = ["train_cmd", "zoo_cmd", "policy_cmd", "prune_cmd", "device_cmd", "search_cmd"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


class _StderrLines(logging.Handler):
    """Warnings as one plain line each on whatever sys.stderr is when they happen."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"warning: {record.getMessage()}", file=sys.stderr)
        except (ValueError, OSError):  # stderr closed (a test's captured stream): nothing to say it on
            pass


def _warnings_to_stderr() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrLines) for h in root.handlers):
        handler = _StderrLines(level=logging.WARNING)
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    _warnings_to_stderr()
    try:
        # With standalone_mode=False, typer *returns* typer.Exit codes and 130 for Ctrl-C.
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):
            return rv
        if hasattr(rv, "exit_code"):
            return int(rv.exit_code)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click's own usage errors
        return int(exc.code or 0)
    except Exception as exc:  # click.ClickException and friends carry their own message
        click_errors, aborts = _click_exception_types()
        if isinstance(exc, click_errors):
            exc.show()  # type: ignore[attr-defined]
            return exc.exit_code  # type: ignore[attr-defined]
        if isinstance(exc, aborts):
            print("aborted", file=sys.stderr)
            return 130
        raise
    return 0


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage-error and abort classes: typer >= 0.20 vendors click as `typer._click`, whose exceptions
    (missing option, typer.BadParameter) are not click's own."""
    import click

    errors: list[type] = [click.ClickException]
    aborts: list[type] = [click.exceptions.Abort, typer.Abort]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        errors.append(vendored.ClickException)
        if hasattr(vendored, "Abort"):
            aborts.append(vendored.Abort)
    return tuple(errors), tuple(aborts)


if __name__ == "__main__":
    sys.exit(main())
