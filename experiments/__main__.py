"""Command line: ``python -m experiments list`` and ``python -m experiments run NAME [options]``."""

from __future__ import annotations

import argparse
import ast
import sys

from experiments import STUDIES, run


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_set(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _value(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description="jaxrnn's seed studies")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the studies")
    p_run = sub.add_parser("run", help="run one study (or 'all')")
    p_run.add_argument("name", choices=[*STUDIES, "all"])
    p_run.add_argument("--quick", action="store_true", help="a small configuration that ends in seconds")
    p_run.add_argument("--seed", type=int, default=0, help="PRNG seed (same seed, same numbers)")
    p_run.add_argument("--out", default=None, help="output folder (default runs/NAME)")
    p_run.add_argument("--text", default=None, help="char_lm: a UTF-8 text file to model instead of stdlib docstrings")
    p_run.add_argument("--data", default=None, help="sentiment: a CSV/TSV file of (text, label) rows")
    p_run.add_argument("--epochs", type=int, default=None, help="override the number of training epochs")
    p_run.add_argument("--temperature", type=float, default=None, help="char_lm: sampling temperature")
    p_run.add_argument("--horizon", type=int, default=None, help="sequence_forecast: forecast horizon h (years)")
    p_run.add_argument("--lengths", type=int, nargs="+", default=None, help="vanishing_gradients: adding-problem T")
    p_run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any other config key (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "list":
        width = max(map(len, STUDIES))
        for name, about in STUDIES.items():
            print(f"{name.ljust(width)}  {about}")
        return 0

    names = list(STUDIES) if args.name == "all" else [args.name]
    for name in names:
        config = {"quick": args.quick, "seed": args.seed}
        if args.out:
            config["out"] = args.out if len(names) == 1 else f"{args.out}/{name}"
        for key in ("text", "data", "epochs", "temperature", "horizon", "lengths"):
            value = getattr(args, key)
            if value is not None:
                config[key] = value
        config.update(_parse_set(args.set))
        run(name, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
