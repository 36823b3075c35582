"""The report's plots, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` and a ``FigureCanvasAgg`` directly,
never through ``pyplot``: a library must not switch the global backend of a user's notebook,
and no figure is left open in pyplot's registry. Every plot is drawn at ``DPI`` (80) and
saved without metadata, so the embedded PNGs stay small and a report is byte-stable.

Each function takes plain JSON-ready artifacts (as written to ``artifacts.json``) and returns
``bytes``; none of them reads files or knows about HTML.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 80
MAX_BARS = 40  # per-class charts beyond this show the top and bottom MAX_BARS // 2 classes
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]  # lines that coincide stay visible


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure, colors: int = 128) -> bytes:
    """PNG bytes, reduced to an adaptive palette: plots are flat colours and antialiased
    edges, so ``colors`` entries look the same and take about a third of the bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, format="png", optimize=True)
    return out.getvalue()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- classification -------------------------------------------------------------------------------


def per_class_bars(per_class: dict[str, float], chance: float | None = None, title: str = "") -> bytes:
    """Horizontal bars of per-class accuracy, best first; the top and bottom classes when many."""
    items = sorted(((str(k), float(v)) for k, v in per_class.items() if _finite(v)), key=lambda kv: (-kv[1], kv[0]))
    shown = items
    if len(items) > MAX_BARS:
        half = MAX_BARS // 2
        shown = items[:half] + [("...", math.nan)] + items[-half:]
    fig = new_figure(7.0, 0.8 + 0.19 * len(shown))
    ax = fig.add_subplot()
    ys = list(range(len(shown)))[::-1]  # best at the top
    values = [0.0 if math.isnan(v) else v for _, v in shown]
    colors = ["white" if math.isnan(v) else "#4c72b0" for _, v in shown]
    ax.barh(ys, values, color=colors, height=0.75)
    for y, (_, v) in zip(ys, shown):
        if not math.isnan(v):
            ax.text(min(v + 0.01, 0.93), y, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(ys, [textwrap.shorten(name, 40, placeholder="...") for name, _ in shown], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (top-1)")
    mean = sum(v for _, v in items) / len(items) if items else math.nan
    if _finite(mean):
        ax.axvline(mean, color="black", lw=1, label=f"mean over classes {mean:.3f}")
    if _finite(chance):
        ax.axvline(chance, color="#d62728", lw=1, ls="--", label=f"chance {chance:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(y=0.01)
    more = f" (best and worst {MAX_BARS // 2} of {len(items)} classes)" if len(items) > MAX_BARS else ""
    ax.set_title(f"{title}{more}", fontsize=10)
    return to_png(fig)


def confusion_matrix(classes: Sequence[str], counts: Sequence[Sequence[int]], title: str = "") -> bytes:
    """The confusion grid (rows: true class, columns: predicted), each row as a fraction of its
    samples, with the count written in every non-empty cell."""
    n = len(classes)
    totals = [max(1, sum(row)) for row in counts]
    fractions = [[c / t for c in row] for row, t in zip(counts, totals)]  # (C, C) row-normalised
    side = 2.2 + 0.32 * n
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            if c:
                ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                        color="white" if fractions[i][j] > 0.6 else "black")
    names = [textwrap.shorten(str(c), 22, placeholder="...") for c in classes]
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def reliability_diagram(reliability: dict[str, list[dict]], ece: dict[str, float | None]) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling, one panel each.

    ``reliability``: ``{"before": bins, "after": bins}`` with bins of (lo, hi, count,
    confidence, accuracy); the count of each bin is written above its bar.
    """
    panels = [(k, v) for k, v in reliability.items() if isinstance(v, list)]
    fig = new_figure(4.2 * max(1, len(panels)), 4.0)
    for i, (name, bins) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        full = [b for b in bins if b.get("count") and _finite(b.get("accuracy"))]
        lefts = [b["lo"] for b in full]
        widths = [b["hi"] - b["lo"] for b in full]
        ax.bar(lefts, [b["accuracy"] for b in full], width=widths, align="edge", color="#4c72b0",
               edgecolor="white", label="accuracy")
        ax.scatter([b["confidence"] for b in full], [b["accuracy"] for b in full], s=10, color="black",
                   zorder=3, label="(mean confidence, accuracy)")
        for b in full:
            ax.text(b["lo"] + (b["hi"] - b["lo"]) / 2, min(b["accuracy"] + 0.02, 0.97), str(b["count"]),
                    ha="center", fontsize=6, color="#333333")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy" if i == 0 else "")
        label = {"before": "as the model scores", "after": "after temperature scaling"}.get(name, name)
        value = ece.get(name)
        ax.set_title(f"{label}" + (f"\nECE {value:.4f}" if _finite(value) else ""), fontsize=10)
        if i == 0:
            ax.legend(loc="upper left", fontsize=7)
    return to_png(fig)


def conformal_curves(curves: dict[str, dict], alpha: float | None = None) -> bytes:
    """Empirical coverage and mean set size against alpha, one line per non-conformity score."""
    fig = new_figure(9.0, 3.6)
    cov_ax, size_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    alphas_all: list[float] = []
    for i, (score, curve) in enumerate(sorted(curves.items())):
        alphas = curve.get("alpha") or []
        alphas_all += alphas
        style = dict(color=COLORS[i % len(COLORS)], marker=STYLES[i % len(STYLES)][0],
                     ls=STYLES[i % len(STYLES)][1], ms=4, mfc="none", label=score)
        cov_ax.plot(alphas, curve.get("coverage") or [], **style)
        size_ax.plot(alphas, curve.get("set_size") or [], **style)
    if alphas_all:
        lo, hi = min(alphas_all), max(alphas_all)
        cov_ax.plot([lo, hi], [1 - lo, 1 - hi], color="grey", ls="--", lw=1, label="target 1 - alpha")
    for ax in (cov_ax, size_ax):
        if _finite(alpha):
            ax.axvline(alpha, color="black", lw=0.8, ls=":", label=f"alpha = {alpha:g} (metrics)")
        ax.set_xlabel("alpha (target miscoverage)")
        ax.grid(alpha=0.3)
    cov_ax.set_ylabel("empirical coverage")
    cov_ax.set_title("coverage on the held-out half", fontsize=10)
    size_ax.set_ylabel("mean prediction-set size")
    size_ax.set_title("set size (smaller is sharper)", fontsize=10)
    cov_ax.legend(fontsize=7)
    return to_png(fig)


def reward_by_degree(by_alpha: dict[str, dict], goal: dict | None = None) -> bytes:
    """Mean reward per number of goal attributes an image satisfies, one line per alpha."""
    fig = new_figure(5.0, 3.4)
    ax = fig.add_subplot()
    for i, (alpha, levels) in enumerate(by_alpha.items()):
        pairs = sorted((int(k), v) for k, v in levels.items() if _finite(v))
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="o", color=COLORS[i % len(COLORS)],
                label=f"alpha {alpha}")
    ax.set_xlabel("goal attributes satisfied")
    ax.set_ylabel("mean reward")
    goal_text = ", ".join(f"{k}={v}" for k, v in (goal or {}).items())
    ax.set_title(f"reward by degree of goal match ({goal_text})" if goal_text else "reward by degree", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return to_png(fig)


# -- training -------------------------------------------------------------------------------------


def training_curves(history: Sequence[dict]) -> bytes | None:
    """Loss terms and learning rate against step (None when the rows hold neither)."""
    steps = [r.get("step") for r in history]
    terms = {k for r in history for k in r if (k == "loss" or k.endswith("_loss")) and _finite(r.get(k))}
    losses = sorted(terms, key=lambda k: (k != "loss", k))  # the total first, in black
    has_lr = any(_finite(r.get("lr")) for r in history)
    if not losses and not has_lr:
        return None
    fig = new_figure(9.0, 3.4)
    loss_ax = fig.add_subplot(1, 2, 1)
    for i, key in enumerate(losses):
        pts = [(s, r[key]) for s, r in zip(steps, history) if _finite(r.get(key)) and _finite(s)]
        color, width = ("black", 1.6) if key == "loss" else (COLORS[i % len(COLORS)], 1.1)
        loss_ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=width, color=color, label=key)
    loss_ax.set_xlabel("step"), loss_ax.set_ylabel("loss")
    loss_ax.set_title("training loss", fontsize=10)
    loss_ax.grid(alpha=0.3)
    if losses:
        loss_ax.legend(fontsize=7)
    lr_ax = fig.add_subplot(1, 2, 2)
    pts = [(s, r["lr"]) for s, r in zip(steps, history) if _finite(r.get("lr")) and _finite(s)]
    lr_ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, color="#2ca02c")
    lr_ax.set_xlabel("step"), lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("learning rate", fontsize=10)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    lr_ax.grid(alpha=0.3)
    return to_png(fig)
