"""`mace` entry point: one argparse tree, each command in a module of its own, one error handler.

Every expected failure is one line on stderr, ``mace <command>: error: <what is wrong>``, and exit status 2: bad
arguments (argparse's own errors included), MaceError (bad model, cache file, device, input...), OSError (the
message names the file) and ValueError (a value a command could not use). Anything else is a bug: one line
``mace <command>: internal error: ...`` and exit status 3; MACE_DEBUG=1 (mace.settings) shows its traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from mace import settings
from mace.cli import cache_cmd, model_cmd, serve_cmd, tools_cmd
from mace.cli.files import describe_os_error
from mace.errors import MaceError

EXIT_ERROR = 2  # bad input: arguments, files, devices
EXIT_INTERNAL = 3  # a bug in mace
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (its default prints the usage first); subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mace",
        description="Deep-learning inference on OpenCL devices with an instant start.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_cmd.register(sub)
    cache_cmd.register(sub)
    tools_cmd.register(sub)
    serve_cmd.register(sub)
    return parser


def one_line(text: str) -> str:
    """A message whose lines (a child process's stderr, a multi-line driver log) are joined into one."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip()) or "(no message)"


def _command(args: argparse.Namespace) -> str:
    return " ".join(str(part) for part in (args.command, getattr(args, "verb", None)) if part)


def _leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command given, so that its errors name it: `mace cache clear: error: ...`."""
    for dest in ("command", "verb"):
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if action is None or getattr(args, dest, None) not in action.choices:
            break
        parser = action.choices[getattr(args, dest)]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _leaf_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="mace: %(levelname)s: %(message)s")
    command = _command(args)

    def fail(message: str, status: int = EXIT_ERROR, kind: str = "error") -> int:
        print(f"mace {command}: {kind}: {one_line(message)}", file=sys.stderr)
        return status

    try:
        return int(args.func(args) or 0)
    except MaceError as exc:
        return fail(str(exc))
    except BrokenPipeError:  # `mace ... | head`: the reader left; nothing to report, and no error at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        return fail(describe_os_error(exc))
    except ValueError as exc:  # a value the command could not use (a number, a shape, a device index)
        return fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if settings.debug():
            raise
        return fail(f"{type(exc).__name__}: {exc} (run with {settings.DEBUG.name}=1 for the traceback)",
                    EXIT_INTERNAL, "internal error")


if __name__ == "__main__":
    sys.exit(main())
