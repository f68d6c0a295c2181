"""Benchmark plots: speedup heatmap over beam shapes, bar chart of the best configurations.

  python -m demos.plots BENCH_DIR     # (re)draws the plots from BENCH_DIR/results.json
"""

import json
import sys

from pathlib import Path

import numpy as np

from redrafter_mlx.errors import UsageError, run_cli


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(rows, what: str) -> str:
    r = rows[0]
    return (f"{what}\n{r['model']} ({r['dtype']}), {r['device']}, mlx {r['mlx']}\n"
            f"{r['prompts']} prompts x up to {r['max_tokens']} tokens, temp {r['temp']}")


def our_ar(method: str) -> bool:
    """Whether a benchmark method is our AR, in any form of the model ("ar", "ar_FORM")."""
    return method == "ar" or method.startswith("ar_")


def speedups(rows) -> dict:
    """method -> its speed over the fastest of our AR forms in the run."""
    fastest = max(r["tokens_per_s"] for r in rows if our_ar(r["method"]))
    return {r["method"]: r["tokens_per_s"] / fastest for r in rows}


def plot_heatmap(rows, path: Path):
    """Speedup of ReDrafter over our fastest AR for each (width, length), the best run of each."""
    plt = _pyplot()
    shapes, speedup = [r for r in rows if r["method"].startswith("redrafter_")], speedups(rows)
    widths = sorted({r["width"] for r in shapes})
    lengths = sorted({r["length"] for r in shapes})
    grid = np.full((len(widths), len(lengths)), np.nan)
    for r in shapes:  # the best of a shape's runs (with and without the lookup beam)
        cell = widths.index(r["width"]), lengths.index(r["length"])
        grid[cell] = np.fmax(grid[cell], speedup[r["method"]])
    fig, ax = plt.subplots(figsize=(1.4 * len(lengths) + 3, 0.9 * len(widths) + 2.2))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=min(0.5, np.nanmin(grid)), vmax=max(1.5, np.nanmax(grid)))
    for i in range(len(widths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{grid[i, j]:.2f}x", ha="center", va="center", fontsize=10)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(widths)), [str(w) for w in widths])
    ax.set_xlabel("beam length (LLM token + drafts)")
    ax.set_ylabel("beam width")
    ax.set_title(_title(rows, "ReDrafter speedup over our fastest auto-regressive form"), fontsize=8)
    fig.colorbar(image, ax=ax, label="speedup")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_best(rows, path: Path, top: int = 4):
    """tok/s of the baselines and the `top` fastest ReDrafter shapes."""
    plt = _pyplot()
    baselines = [r for r in rows if not r["method"].startswith("redrafter_")]
    best = sorted((r for r in rows if r["method"].startswith("redrafter_")), key=lambda r: -r["tokens_per_s"])[:top]
    chosen, speedup = baselines + best, speedups(rows)
    colors = ["#888888" if r in baselines else "#2a9d8f" for r in chosen]
    fig, ax = plt.subplots(figsize=(1.3 * len(chosen) + 2, 4))
    bars = ax.bar(range(len(chosen)), [r["tokens_per_s"] for r in chosen], color=colors)
    for bar, r in zip(bars, chosen):
        label = f"{r['tokens_per_s']:.1f}\nx{speedup[r['method']]:.2f}"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(chosen)), [r["method"].replace("redrafter_", "ReDrafter ") for r in chosen],
                  rotation=20, fontsize=8)
    ax.set_ylabel("tokens / s")
    ax.set_ylim(0, 1.25 * max(r["tokens_per_s"] for r in chosen))
    ax.set_title(_title(rows, "Throughput: baselines and best beam shapes (x: over our fastest AR form)"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_all(rows, out_dir: Path):
    plot_heatmap(rows, out_dir / "speedup_heatmap.png")
    plot_best(rows, out_dir / "best_configs.png")


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise UsageError("usage: python -m demos.plots BENCH_DIR (a demos.benchmark --out-dir)")
    results = Path(args[0]) / "results.json"
    try:
        rows = json.loads(results.read_text())["rows"]
        ar = [r["tokens_per_s"] for r in rows if our_ar(r["method"])]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{results}: not a demos.benchmark results file ({type(error).__name__}: {error})") from None
    if not ar:
        raise UsageError(f"{results}: not a demos.benchmark results file (no row of our AR)")
    plot_all(rows, results.parent)


if __name__ == "__main__":
    run_cli(main)
