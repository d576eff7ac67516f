"""The ``daedalus-v4l2`` command.

Subcommands come from the ``daedalus.commands`` entry-point group, so each
phase's distribution adds its own (ping, parse, roundtrip, decode ...) by
being installed. A subcommand is a class with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; two distributions
claiming the same name is a startup error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from typing import Protocol

from daedalus.testbed.system import TestbedError


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def load_commands() -> dict[str, Command]:
    """Every installed subcommand; one that fails to import is left out with a warning
    (so that, say, a stale protocol build does not take `guest` down with it)."""
    commands: dict[str, Command] = {}
    owners: dict[str, str] = {}
    for ep in entry_points(group="daedalus.commands"):
        owner = ep.dist.name if ep.dist else ep.value
        try:
            cls = ep.load()
        except Exception as exc:
            print(f"daedalus-v4l2: warning: subcommand {ep.name!r} from {owner} unavailable: "
                  f"{exc}", file=sys.stderr)
            continue
        cmd: Command = cls()
        if cmd.NAME in commands:
            raise TestbedError(f"subcommand {cmd.NAME!r} is claimed by both "
                               f"{owners[cmd.NAME]} and {owner}")
        commands[cmd.NAME] = cmd
        owners[cmd.NAME] = owner
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="daedalus-v4l2",
        description="Build, boot and exercise the daedalus-v4l2 userspace-backed V4L2 decoder.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    try:
        commands = load_commands()
    except TestbedError as exc:
        print(f"daedalus-v4l2: {exc}", file=sys.stderr)
        return 2
    for name in sorted(commands):
        cmd = commands[name]
        p = sub.add_parser(name, help=cmd.HELP, description=cmd.HELP)
        cmd.add_arguments(p)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="daedalus-v4l2: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return commands[args.command].run(args)
    except TestbedError as exc:
        print(f"daedalus-v4l2: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
