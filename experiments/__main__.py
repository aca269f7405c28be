"""Command line: ``python -m experiments list`` and ``python -m experiments run NAME [options]``."""

from __future__ import annotations

import argparse
import sys

from experiments import STUDIES, check, run
from experiments._common import CONFIG_TYPES, existing_file, non_negative_int, output_dir, study_keys

# the study-specific flags, each the config key of the same name (checked by that key's type in CONFIG_TYPES)
FLAGS = ("text", "data", "epochs", "temperature", "horizon", "lengths")


def _parse_set(items, names: list[str], error) -> dict:
    """``--set KEY=VALUE`` items to a dict: each KEY a setting of one of the studies ``names``, each VALUE converted
    and checked by its type in CONFIG_TYPES (the same rule as the flag of that name). ``error(message)`` exits."""
    keys = set().union(*(study_keys(name) for name in names))
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            error(f"argument --set: expected KEY=VALUE with a non-empty KEY, got {item!r}")
        if key not in keys:
            where = names[0] if len(names) == 1 else "any study"
            error(f"argument --set: unknown key {key!r} for {where}; valid keys: {', '.join(sorted(keys))}")
        try:
            out[key] = CONFIG_TYPES[key](value)
        except argparse.ArgumentTypeError as err:
            error(f"argument --set {key}: {err}")
    return out


def _check_flags(args, names: list[str], error) -> None:
    """A study-specific flag given for studies that have no such setting is an error, not silently ignored."""
    keys = set().union(*(study_keys(name) for name in names))
    for key in FLAGS:
        if getattr(args, key) is not None and key not in keys:
            users = [name for name in STUDIES if key in study_keys(name)]
            error(f"argument --{key}: {names[0]} has no such setting (it applies to {', '.join(users)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description="jaxrnn's seed studies")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the studies")
    p_run = sub.add_parser("run", help="run one study (or 'all')")
    types = CONFIG_TYPES
    p_run.add_argument("name", choices=[*STUDIES, "all"])
    p_run.add_argument("--quick", action="store_true", help="a small configuration that ends in seconds")
    p_run.add_argument("--seed", type=non_negative_int, default=0, help="PRNG seed (same seed, same numbers)")
    p_run.add_argument("--out", type=output_dir, default=None, help="output folder (default runs/NAME)")
    p_run.add_argument(
        "--text",
        type=existing_file,
        default=None,
        help="char_lm: a UTF-8 text file to model instead of stdlib docstrings",
    )
    p_run.add_argument(
        "--data", type=existing_file, default=None, help="sentiment: a CSV/TSV file of (text, label) rows"
    )
    p_run.add_argument("--epochs", type=types["epochs"], default=None, help="override the number of training epochs")
    p_run.add_argument(
        "--temperature", type=types["temperature"], default=None, help="char_lm: sampling temperature (> 0)"
    )
    p_run.add_argument(
        "--horizon", type=types["horizon"], default=None, help="sequence_forecast: forecast horizon h (years)"
    )
    p_run.add_argument(
        "--lengths",
        type=types["lengths"].item,
        nargs="+",
        default=None,
        help="vanishing_gradients: adding-problem T (each >= 2)",
    )
    p_run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any other config key (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "list":
        width = max(map(len, STUDIES))
        for name, about in STUDIES.items():
            print(f"{name.ljust(width)}  {about}")
        return 0

    names = list(STUDIES) if args.name == "all" else [args.name]
    _check_flags(args, names, p_run.error)
    overrides = _parse_set(args.set, names, p_run.error)  # every check before the first study starts
    given = {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None} | overrides
    configs = {}
    for name in names:  # each study takes the given settings it has ('all' spreads them over several)
        config = {"quick": args.quick, "seed": args.seed}
        if args.out:
            config["out"] = args.out if len(names) == 1 else f"{args.out}/{name}"
        config |= {key: value for key, value in given.items() if key in study_keys(name)}
        try:
            configs[name] = check(name, config)  # imports the study, for its own check of how settings combine
        except ValueError as err:
            p_run.error(f"{name}: {err}")
    for name, config in configs.items():
        run(name, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
