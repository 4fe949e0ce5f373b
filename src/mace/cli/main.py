"""`mace` entry point: one argparse tree, each command in a module of its own, one error handler."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mace.cli import cache_cmd, model_cmd, tools_cmd
from mace.errors import MaceError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mace",
        description="Deep-learning inference on OpenCL devices with an instant start.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_cmd.register(sub)
    cache_cmd.register(sub)
    tools_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="mace: %(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MaceError as exc:
        print(f"mace {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"mace {args.command}: error: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
