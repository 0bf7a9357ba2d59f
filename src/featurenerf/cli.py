"""The ``featurenerf`` command line.

``fit | validate | test | predict`` are LightningCLI subcommands (the class signatures are the config
schema); every other command is a small module in :mod:`featurenerf.commands`. Heavy libraries are
imported only once a command is chosen, so ``featurenerf --help`` starts fast.
"""

from __future__ import annotations

import importlib
import os
import sys

from featurenerf.errors import FeatureNeRFError

LIGHTNING_COMMANDS = {
    "fit": "Train a model (featurenerf fit --config configs/toy_cars.yaml)",
    "validate": "Evaluate novel views and tasks (--task part_seg keypoints ...); defaults to the latest run",
    "test": "Like validate, on the test loop",
    "predict": "Run the predict loop of a checkpoint",
}
COMMANDS = ("data", "teachers", "render", "export", "results")


def _describe(name: str) -> str:
    try:
        return getattr(importlib.import_module(f"featurenerf.commands.{name}"), "DESCRIPTION", "")
    except ImportError:
        return "(unavailable)"


def print_help() -> None:
    print("usage: featurenerf <command> [options]   (featurenerf <command> --help for details)\n")
    print("FeatureNeRF: generalizable NeRFs that distil 2D foundation-model features into 3D.\n")
    print("commands:")
    for name, text in LIGHTNING_COMMANDS.items():
        print(f"  {name:<10} {text}")
    for name in COMMANDS:
        if importlib.util.find_spec(f"featurenerf.commands.{name}") is not None:
            print(f"  {name:<10} {_describe(name)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return 0
    if argv[0] in ("-V", "--version"):
        from featurenerf import __version__

        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from featurenerf.lightning_cli import run_lightning

        return run_lightning(command, rest)
    if command in COMMANDS:
        try:
            module = importlib.import_module(f"featurenerf.commands.{command}")
        except ImportError as err:
            print(f"featurenerf: error: command {command!r} is unavailable ({err})", file=sys.stderr)
            return 2
        try:
            return int(module.main(rest) or 0)
        except FeatureNeRFError as err:  # one line naming the file/option; no traceback
            print(f"featurenerf: error: {err}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # output piped to a reader that stopped (`| head`): not an error of ours
            # Point stdout at devnull so the interpreter's final flush does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, as a shell tool killed by the broken pipe would report
    known = ", ".join([*LIGHTNING_COMMANDS, *COMMANDS])
    print(f"featurenerf: error: unknown command {command!r}; choose from {known}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
