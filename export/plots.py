"""The export report's plots: confusion matrices and FP32-vs-candidate scatter plots (matplotlib, Agg canvas).

Drawn without pyplot state and without a software tag, so runs are reproducible;
:mod:`edge_mer_export.report` decides which plots an encoder gets.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The scatter plot draws at most this many rows (evenly spaced, so deterministic).
MAX_SCATTER_ROWS = 5000


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(path: Path, confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> Path:
    """Confusion matrix PNG: counts in cells, colour = share of the true class (row)."""
    cm = np.asarray(confusion, dtype=np.int64)
    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    fig = _new_figure(max(4.0, 0.7 * k + 2.5), max(3.5, 0.7 * k + 2.0))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of true class")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def plot_scatter(path: Path, reference: np.ndarray, candidate: np.ndarray, class_names: Sequence[str],
                 title: str, candidate_name: str = "candidate") -> Path:
    """FP32 (x) against candidate (y) probability of every class, one colour per class, y = x dashed."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape[0] > MAX_SCATTER_ROWS:
        keep = np.linspace(0, ref.shape[0] - 1, MAX_SCATTER_ROWS).astype(np.int64)
        ref, cand = ref[keep], cand[keep]
    fig = _new_figure(6.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="0.4", linewidth=1.0, label="y = x")
    for c in range(ref.shape[1]):
        name = class_names[c] if c < len(class_names) else str(c)
        ax.scatter(ref[:, c], cand[:, c], s=8, alpha=0.6, label=name)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("fp32 probability")
    ax.set_ylabel(f"{candidate_name} probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, markerscale=1.5)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
