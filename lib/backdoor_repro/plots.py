"""The notebooks' plots, fit for a paper: labelled axes, legends outside the data, whole-epoch ticks, and a panel
only where a parameter has more than one value."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator


def legend_outside(ax, **kwargs):
    """The legend to the right of ``ax``, clear of its data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)


def whole_epochs(*axes) -> None:
    """Ticks at whole numbers only on the x axes of ``axes`` (epochs)."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def metric_bars(table: pd.DataFrame, metrics, title: str, xlabel: str, ylabel: str = "%", ylim=(0, 100)):
    """Grouped bars: one group per row of ``table`` (its index), one bar per metric, the legend beside the axes."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(table) + 2.5), 3.6))
    table[list(metrics)].plot.bar(ax=ax, width=0.8)
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=ylim, title=title)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    legend_outside(ax, title="metric")
    fig.tight_layout()
    return fig


def curve_panels(panels: dict[str, dict[str, tuple]], xlabel: str, title: str = "", ylim=(0, 100),
                 styles: dict[str, str] | None = None, reference: dict[str, float] | None = None):
    """One panel per y quantity (``{ylabel: {line: (epochs, values)}}``), whole-epoch ticks, one legend beside the
    last panel; ``reference`` draws a dashed line at a level (e.g. chance) in the named panels."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.6, 3.6), squeeze=False)
    for ax, (ylabel, lines) in zip(axes[0], panels.items()):
        for name, (x, y) in lines.items():
            ax.plot(list(x), list(y), (styles or {}).get(name, "-"), marker="o", ms=3, label=name)
        if reference and ylabel in reference:
            ax.axhline(reference[ylabel], color="grey", lw=0.8, ls="--", label="chance")
        ax.set(xlabel=xlabel, ylabel=ylabel, ylim=ylim)
    whole_epochs(*axes[0])
    legend_outside(axes[0, -1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def score_histograms(panels: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, bins: int = 60):
    """One histogram panel per attack (``{title: (scores, poisoned mask)}``): clean and poisoned samples' scores as
    densities, the legend beside the last panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.4, 3.4), squeeze=False)
    for ax, (title, (scores, poisoned)) in zip(axes[0], panels.items()):
        edges = np.linspace(0, np.quantile(scores, 0.999) + 1e-9, bins)
        ax.hist(scores[~poisoned], bins=edges, alpha=0.6, density=True, label="clean")
        ax.hist(scores[poisoned], bins=edges, alpha=0.6, density=True, label="poisoned")
        ax.set(title=title, xlabel=xlabel, ylabel="density")
    legend_outside(axes[0, -1])
    fig.tight_layout()
    return fig


def parameter_study(table: pd.DataFrame, metrics=("ACC", "ASR", "RA"), title: str = ""):
    """One panel per parameter with more than one setting (``table``: a (parameter, setting) x metric frame);
    parameters held at one setting are named in the title instead of drawn as a single point."""
    parameters = list(dict.fromkeys(table.index.get_level_values(0)))
    varied = [p for p in parameters if len(table.loc[p]) > 1] or parameters[:1]
    fixed = [f"{p} = {table.loc[p].index[0]}" for p in parameters if p not in varied]
    fig, axes = plt.subplots(1, len(varied), figsize=(4.8 * len(varied) + 1.6, 3.6), squeeze=False)
    for ax, name in zip(axes[0], varied):
        part = table.loc[name]
        for metric in metrics:
            ax.plot(list(part.index), part[metric], marker="o", label=metric)
        ax.set(xlabel=name, ylabel="%", ylim=(0, 100))
        ax.tick_params(axis="x", labelsize=8)
    legend_outside(axes[0, -1])
    fig.suptitle(title + (f" ({'; '.join(fixed)}: one setting on this profile)" if fixed else ""))
    fig.tight_layout()
    return fig
