"""The ``volslice`` command: one subcommand per pipeline step.

    volslice synthetic | cache | folds | baseline | pretrain | segment | organs | train | descriptors | infer |
             score | interpret | bundle | real-heads | config | report

A mistake of the user's (a path that does not exist, a config key or value the schema refuses, an
unknown competition, an input the library refuses by name) ends in one line,
``volslice <command>: error: ...``, and exit status 2; ``--debug`` shows the traceback. Any other
exception is a bug and keeps its traceback.

Each subcommand's module parses its arguments and calls the library; nothing here is imported by
the library. Modules import the library inside ``run``, so ``volslice --help`` stays fast.
The numbered ``preprocess/NN_*.py`` scripts call the same subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import version

COMMANDS = ("synthetic", "cache", "folds", "baseline", "pretrain", "segment", "organs", "train", "descriptors",
            "infer", "score", "interpret", "bundle", "real-heads", "config", "report")
# what a user's mistake raises (the library names the mistake in the message); anything else is a bug
USER_ERRORS = (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    """The ``volslice`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="volslice", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"volslice {version('volslice')}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"volslice.cli.{name.replace('-', '_')}")
        command = sub.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run, parser=command)
    return parser


def add_competition_argument(parser) -> None:
    """``--competition``: one of the known competitions (default: the config's ``competition``)."""
    from volslice import competitions

    parser.add_argument("--competition", choices=competitions.names(),
                        help="which competition (default: the config's competition key)")


def competition_override(args) -> list[str]:
    """``--competition`` as a config override (none where not given)."""
    return [f"competition={args.competition}"] if getattr(args, "competition", None) else []


def folds_and_overrides(args) -> tuple[list[int] | None, list[str]]:
    """``--fold`` and the overrides of a per-fold command: ``--fold 0 train.epochs=3`` gives argparse's
    ``--fold`` the override too, so every ``key=value`` there is moved to the overrides. Folds: None
    for all (``all`` or none named), else the fold numbers (-1: train on every patient)."""
    overrides = [f for f in args.fold if "=" in f] + args.overrides
    folds = [f for f in args.fold if "=" not in f]
    return (None if folds in ([], ["all"]) else [int(f) for f in folds]), overrides


def user_error_types() -> tuple:
    """``USER_ERRORS`` and OmegaConf's refusals of a config key or value."""
    from omegaconf.errors import OmegaConfBaseException

    return (*USER_ERRORS, OmegaConfBaseException)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (a KeyError's without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def main(argv=None) -> int:
    """Parse ``argv`` (default: the command line) and run the subcommand; returns its exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        return args.run(args)
    except user_error_types() as err:
        if args.debug:
            raise
        print(f"volslice {args.command}: error: {one_line(err)} (--debug shows the traceback)", file=sys.stderr)
        return 2
