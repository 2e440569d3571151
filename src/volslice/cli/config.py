"""Print the resolved config: the schema's defaults, the YAML files in order, then the overrides.

    volslice config [--config configs/demo.yaml ...] [key=value ...]
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.config import load_config, to_yaml

    print(to_yaml(load_config(*args.config, overrides=args.overrides)), end="")
    return 0
