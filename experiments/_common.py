"""What every study shares: its configuration, output folder, progress lines, metrics.json, summary table, figures.

A study is a module with ``run(config) -> dict``. ``config`` is a plain dict (the runner builds it from the
command line; tests build it by hand)::

    {"quick": False, "seed": 0, "out": "runs/iris_mlp", ...study-specific keys...}

Inside, a study does ``ctx = Context("iris_mlp", config, defaults)`` and then ``ctx.log(...)``,
``ctx.figure(name)`` / ``ctx.save(fig, name)``, and finally ``return ctx.finish(metrics, rows)``, which writes
``metrics.json``, prints the summary table and returns the metrics.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COMMON_KEYS",
    "CONFIG_TYPES",
    "check_config",
    "Context",
    "boolean",
    "existing_file",
    "finite_float",
    "format_table",
    "fractions",
    "int_at_least",
    "integer",
    "list_of",
    "names_list",
    "non_empty_text",
    "non_negative_int",
    "optional",
    "output_dir",
    "positive_float",
    "positive_int",
    "rate",
    "resolve_config",
    "scan_steps",
    "study_keys",
    "to_jsonable",
]


def to_jsonable(value: Any) -> Any:
    """numpy / jax scalars and arrays, tuples and NamedTuples to plain JSON types (NaN and inf become strings)."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        return to_jsonable(array.item() if array.ndim == 0 else array.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    return value


def scan_steps(step, state, batch, steps: int, ctx: Context | None = None):
    """``steps`` updates of ``step`` (from :func:`jaxrnn.train.make_train_step`) on one fixed ``batch``, in a single
    compiled ``lax.scan``: one compilation and one dispatch, no host round trip per step.

    Returns ``(state, losses [steps])`` (``losses[k]`` is the loss before update ``k``)."""
    import jax

    def body(s, _):
        s, metrics = step.jitted(s, batch)
        return s, metrics["loss"]

    run = lambda s: jax.lax.scan(body, s, None, length=int(steps))  # noqa: E731
    return (ctx.jit(run) if ctx is not None else jax.jit(run))(state)


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == 0.0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table (GitHub markdown layout) of ``rows``, one dict per row."""
    if not rows:
        return ""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ validating settings
# One mechanism for the command line's flags (argparse ``type=``) and its ``--set KEY=VALUE`` overrides: each function
# takes the text as typed (or an already-parsed Python value), returns the converted value, and raises
# argparse.ArgumentTypeError saying what was expected and what came. ``fn.expected`` is that expectation in words.


def _expects(expected: str):
    def wrap(fn):
        fn.expected = expected
        return fn

    return wrap


def _fail(fn, value) -> None:
    raise argparse.ArgumentTypeError(f"expected {fn.expected}, got {value!r}")


def _literal(value):
    """A Python literal typed on the command line (``5``, ``None``, ``(0.8, 0.1, 0.1)``); other text as it is."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def _as_int(value):
    v = _literal(value)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return None
    return int(v)


def _as_float(value):
    if isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    else:
        v = float(value)
    return v if math.isfinite(v) else None


def _number(expected: str, convert: Callable, ok: Callable = lambda v: True) -> Callable:
    """A check: ``convert(value)`` (None when it is not such a number) that ``ok`` accepts."""

    @_expects(expected)
    def check(value):
        v = convert(value)
        if v is None or not ok(v):
            _fail(check, value)
        return v

    return check


def int_at_least(low: int, why: str = "", *, expected: str | None = None) -> Callable:
    """An integer ``>= low`` (``why``: the reason, shown in the message; ``expected``: the whole expectation)."""
    return _number(expected or f"an integer >= {low}{f' ({why})' if why else ''}", _as_int, lambda v: v >= low)


integer = _number("an integer", _as_int)
positive_int = int_at_least(1, expected="a positive integer")
non_negative_int = int_at_least(0, expected="a non-negative integer")
finite_float = _number("a finite number", _as_float)
positive_float = _number("a positive finite number", _as_float, lambda v: v > 0)
rate = _number("a number in [0, 1)", _as_float, lambda v: 0.0 <= v < 1.0)


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@_expects("true or false")
def boolean(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    _fail(boolean, value)


@_expects("a non-empty text")
def non_empty_text(value) -> str:
    v = _literal(value)  # a quoted literal ('"Return the "') is unquoted, anything else is taken as typed
    v = v if isinstance(v, str) else value
    if not isinstance(v, str) or not v:
        _fail(non_empty_text, value)
    return v


@_expects("an existing, readable file")
def existing_file(value) -> str:
    path = Path(str(value)) if isinstance(value, (str, os.PathLike)) else None
    if path is None or not str(value):
        _fail(existing_file, value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"expected an existing, readable file, got {str(value)!r} (no such file)")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"expected an existing, readable file, got {str(value)!r} (not a file)")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"expected an existing, readable file, got {str(value)!r} (not readable)")
    return str(value)


@_expects("a folder path (not an existing file)")
def output_dir(value) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        _fail(output_dir, value)
    if Path(str(value)).exists() and not Path(str(value)).is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder path, got {str(value)!r} (an existing file)")
    return str(value)


def optional(check: Callable) -> Callable:
    """``check``, or None (typed ``None``)."""

    @_expects(f"{check.expected}, or None")
    def check_or_none(value):
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        try:
            return check(value)
        except argparse.ArgumentTypeError as err:  # the same message, saying None is allowed too
            prefix = f"expected {check.expected}"
            text = str(err)
            raise argparse.ArgumentTypeError(
                text.replace(prefix, f"expected {check_or_none.expected}", 1) if text.startswith(prefix) else text
            ) from None

    return check_or_none


def _items(value):
    v = _literal(value)
    if isinstance(v, str):  # 10,30 or lstm,gru: comma-separated, as typed
        v = [part.strip() for part in v.split(",")]
    elif not isinstance(v, (list, tuple)):
        v = [v]
    return list(v)


def list_of(check: Callable) -> Callable:
    """A non-empty list of ``check`` values: ``10,30``, ``[10, 30]`` or a single ``10``."""

    @_expects(f"one or more values (e.g. 10,30), each {check.expected}")
    def check_list(value) -> list:
        items = _items(value)
        if not items or any(item == "" for item in items):
            _fail(check_list, value)
        try:
            return [check(item) for item in items]
        except argparse.ArgumentTypeError:
            _fail(check_list, value)

    check_list.item = check
    return check_list


def names_list(*names: str) -> Callable:
    """A non-empty list of names from ``names``: ``lstm,gru`` or ``['lstm', 'gru']``."""

    @_expects(f"a non-empty list of names from {', '.join(names)}")
    def check(value) -> list:
        items = _items(value)
        if not items or any(not isinstance(item, str) or item not in names for item in items):
            _fail(check, value)
        return items

    return check


@_expects("three positive numbers summing to 1 (train, validation, test), e.g. (0.8, 0.1, 0.1)")
def fractions(value) -> tuple:
    items = _items(value)
    numbers = [_as_float(item) for item in items]
    if len(items) != 3 or any(v is None or not v > 0 for v in numbers) or abs(sum(numbers) - 1.0) > 1e-6:
        _fail(fractions, value)
    return tuple(_literal(item) for item in items)


# every setting a study reads from its config, with its type; a study's valid keys are its DEFAULTS and QUICK keys
# (see study_keys) plus COMMON_KEYS, and a test checks that each has an entry here
CONFIG_TYPES: dict[str, Callable] = {
    # every study
    "quick": boolean,
    "seed": non_negative_int,
    "out": output_dir,
    "verbose": boolean,
    # shared names (the same meaning wherever they appear)
    "hidden": positive_int,
    "embed": positive_int,
    "batch_size": positive_int,
    "epochs": positive_int,
    "steps": positive_int,
    "steps_per_epoch": positive_int,
    "patience": optional(positive_int),
    "lr": positive_float,
    "fractions": fractions,
    # iris_mlp
    "seed_iters": positive_int,
    "eta": positive_float,
    # sequence_forecast
    "frames_hidden": positive_int,
    "frames_steps": positive_int,
    "window": positive_int,
    "horizon": positive_int,
    "lstm_forget_bias": finite_float,
    "train_end": integer,
    "val_end": integer,
    # lstm_walkthrough
    "train_until": integer,
    # vanishing_gradients
    "flow_steps": positive_int,
    "flow_hidden": positive_int,
    "flow_input": positive_int,
    "flow_batch": positive_int,
    "lengths": list_of(int_at_least(2, "a marker in each half of the sequence")),
    "clip_norm": optional(positive_float),
    "eval_size": positive_int,
    "share_compile": boolean,
    "adding_cells": names_list("elman", "lstm", "gru"),
    # word_order
    "keras_epochs": positive_int,
    "keras_lr": positive_float,
    "compare_keras": boolean,
    # char_lm
    "text": optional(existing_file),
    "max_chars": optional(positive_int),
    "seq_len": positive_int,
    "temperature": positive_float,
    "sample_len": positive_int,
    "prompt": non_empty_text,
    "eval_streams": positive_int,
    # sentiment
    "data": optional(existing_file),
    "bidirectional": boolean,
    "max_length": positive_int,
    "min_freq": positive_int,
    "dropout": rate,
}
COMMON_KEYS = ("quick", "seed", "out", "verbose")


def study_keys(name: str) -> set[str]:
    """The settings study ``name`` reads: the keys of its module's ``DEFAULTS`` and ``QUICK`` dicts, read from its
    source (no import: checking a command line must not wait for jax), plus :data:`COMMON_KEYS`."""
    source = (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")
    keys = set(COMMON_KEYS)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) in ("DEFAULTS", "QUICK") for t in node.targets):
            if not isinstance(node.value, ast.Dict) or any(not isinstance(k, ast.Constant) for k in node.value.keys):
                raise TypeError(f"experiments/{name}.py: DEFAULTS and QUICK must be dict literals with literal keys")
            keys.update(k.value for k in node.value.keys)
    return keys


def check_config(name: str, config: dict | None) -> dict:
    """``config`` for study ``name`` with every value checked and converted by its type in :data:`CONFIG_TYPES`
    (None values pass: they mean the default); a ``ValueError`` for an unknown key or a bad value. What the command
    line checks, for ``experiments.run(name, config)`` called from Python."""
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of settings or None, got {type(config).__name__}")
    keys = study_keys(name)
    checked = {}
    for key, value in (config or {}).items():
        if key not in keys:
            raise ValueError(f"unknown setting {key!r} for {name}; valid settings: {', '.join(sorted(keys))}")
        try:
            checked[key] = value if value is None else CONFIG_TYPES[key](value)
        except argparse.ArgumentTypeError as err:
            raise ValueError(f"{name} setting {key!r}: {err}") from None
    return checked


def resolve_config(config: dict | None, defaults: dict | None = None, quick_defaults: dict | None = None) -> dict:
    """The settings a study runs with: ``config`` (None values ignored) over ``quick_defaults`` (when
    ``config["quick"]``) over ``defaults``. :class:`Context` uses it, and so can a study's ``check_config``."""
    config = dict(config or {})
    merged = dict(defaults or {})
    if bool(config.get("quick", False)):
        merged.update(quick_defaults or {})
    merged.update({k: v for k, v in config.items() if v is not None})
    return merged


class Context:
    """One study run: resolved config, output folder, timing, progress and outputs."""

    def __init__(
        self, name: str, config: dict | None, defaults: dict | None = None, quick_defaults: dict | None = None
    ):
        """``config`` (the caller's options; None values ignored) over ``quick_defaults`` (quick runs only) over
        ``defaults``."""
        config = dict(config or {})
        self.name = name
        self.quick = bool(config.get("quick", False))
        self.seed = int(config.get("seed", 0) if config.get("seed") is not None else 0)
        self.out = Path(config.get("out") or Path("runs") / name)
        self.out.mkdir(parents=True, exist_ok=True)
        self.verbose = bool(config.get("verbose", True))
        merged = resolve_config(config, defaults, quick_defaults)
        merged.update(quick=self.quick, seed=self.seed, out=str(self.out))
        self.config = merged
        self.figures: list[str] = []
        self._start = time.perf_counter()
        self.log(f"{name}: {'quick' if self.quick else 'full'} run, seed {self.seed}, writing to {self.out}")

    def __getitem__(self, key: str) -> Any:
        return self.config[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def jit(self, fn, **kwargs):
        """``jax.jit(fn)``; in quick mode compiled with XLA's backend optimisation level 0 and the elemental fusion
        emitters, which cut the compile time that dominates a quick run to about a third (the compiled code runs a
        little slower)."""
        import jax

        if self.compiler_options is not None:
            kwargs.setdefault("compiler_options", self.compiler_options)
        return jax.jit(fn, **kwargs)

    @property
    def compiler_options(self) -> dict | None:
        """XLA options for quick runs (backend optimisation level 0, elemental fusion emitters), None for full runs."""
        return {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False} if self.quick else None

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def log(self, message: str) -> None:
        """A progress line, prefixed with the elapsed time."""
        if self.verbose:
            print(f"[{self.elapsed():6.1f}s] {message}", flush=True)

    def progress(self, label: str):
        """A callback for :func:`jaxrnn.train.fit` style per-epoch progress: ``cb(epoch, record)`` logs one line."""

        def report(*args, **kwargs):
            record = kwargs.get("record")
            epoch = kwargs.get("epoch")
            for arg in args:
                if isinstance(arg, dict):
                    record = arg
                elif isinstance(arg, (int, np.integer)):
                    epoch = int(arg)
            if record is None:
                return
            epoch = record.get("epoch", epoch)
            parts = [f"{k} {v:.4g}" for k, v in record.items() if k != "epoch" and isinstance(v, (float, int))]
            self.log(f"{label} epoch {epoch}: " + ", ".join(parts))

        return report

    # ----------------------------------------------------------------------------------------------- figures
    @staticmethod
    def plt():
        """matplotlib.pyplot with the non-interactive Agg backend (imported lazily)."""
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        plt.rcParams.update(
            {
                "figure.dpi": 110,
                "savefig.dpi": 110,
                "axes.grid": True,
                "grid.alpha": 0.3,
                "axes.spines.top": False,
                "axes.spines.right": False,
                "font.size": 10,
                "axes.titlesize": 11,
                "legend.fontsize": 9,
                "legend.frameon": False,
            }
        )
        return plt

    def save(self, fig, filename: str) -> str:
        """Save ``fig`` as ``out/filename`` (PNG), close it, and remember it; returns the path."""
        plt = self.plt()
        path = self.out / filename
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        self.figures.append(filename)
        self.log(f"figure: {path}")
        return str(path)

    # ------------------------------------------------------------------------------------------------ finish
    def finish(self, metrics: dict, rows: list[dict] | None = None, title: str | None = None) -> dict:
        """Write ``metrics.json`` (with config, figures and runtime), print the summary table, return metrics."""
        metrics = dict(metrics)
        metrics.setdefault("study", self.name)
        metrics["config"] = {k: v for k, v in self.config.items() if k != "verbose"}
        metrics["figures"] = list(self.figures)
        metrics["seconds"] = round(self.elapsed(), 2)
        if rows:
            metrics["table"] = rows
        clean = to_jsonable(metrics)
        path = self.out / "metrics.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(clean, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
        if self.verbose:
            print()
            print(title or f"== {self.name} ({'quick' if self.quick else 'full'}, seed {self.seed}) ==")
            if rows:
                print(format_table(rows))
            print(f"metrics: {path}  figures: {', '.join(self.figures) or '-'}  ({metrics['seconds']:.1f} s)")
            sys.stdout.flush()
        return clean
