"""What every study shares: its configuration, output folder, progress lines, metrics.json, summary table, figures.

A study is a module with ``run(config) -> dict``. ``config`` is a plain dict (the runner builds it from the
command line; tests build it by hand)::

    {"quick": False, "seed": 0, "out": "runs/iris_mlp", ...study-specific keys...}

Inside, a study does ``ctx = Context("iris_mlp", config, defaults)`` and then ``ctx.log(...)``,
``ctx.figure(name)`` / ``ctx.save(fig, name)``, and finally ``return ctx.finish(metrics, rows)``, which writes
``metrics.json``, prints the summary table and returns the metrics.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Context", "format_table", "scan_steps", "to_jsonable"]


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
        merged = dict(defaults or {})
        if self.quick:
            merged.update(quick_defaults or {})
        merged.update({k: v for k, v in config.items() if v is not None})
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
