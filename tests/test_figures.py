"""The figures on small synthetic inputs: labelled axes, legends beside the data, whole-epoch ticks, a panel only for a
varied parameter, the gallery in rows, the profile and scale stamped on every saved figure, the figure shown in the
notebook that saves it under a non-interactive backend, and T&R's Figure 2 verdict as the paper states it."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from backdoor_repro import plots, report
from backdoor_repro.attacks import get_attack
from backdoor_repro.embedding import figure2_verdict, pca_group_panels
from backdoor_repro.gallery import trigger_gallery



def _right_of_axes(fig, ax, legend) -> bool:
    renderer = fig.canvas.get_renderer()
    return legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_bars_label_their_axes_and_keep_the_legend_beside_the_bars():
    table = pd.DataFrame({"ACC": [50.0, 40.0], "ASR": [99.0, 98.0], "CTR": [5.0, 6.0]}, index=["grid3", "blend"])
    fig = plots.metric_bars(table, ["ACC", "ASR", "CTR"], title="No Defense", xlabel="attack")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_ylim()) == ("attack", "%", (0, 100))
    assert _right_of_axes(fig, ax, ax.get_legend())


def test_epoch_curves_tick_whole_epochs_only():
    lines = {"a": ([1, 2, 3], [10, 20, 30])}
    fig = plots.curve_panels({"share (%)": lines, "AUROC (%)": lines}, xlabel="global epoch",
                             reference={"AUROC (%)": 50})
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks) and ax.get_xlabel() == "global epoch"
    assert _right_of_axes(fig, fig.axes[-1], fig.axes[-1].get_legend())
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["a", "chance"]


def test_a_parameter_held_at_one_setting_gets_no_panel_but_a_word_in_the_title():
    index = pd.MultiIndex.from_tuples([("epsilon", "0.06"), ("pruned fraction", "1/64"), ("pruned fraction", "1/32")])
    table = pd.DataFrame({"ACC": [40.0, 41.0, 39.0], "ASR": [10.0, 12.0, 8.0], "RA": [30.0, 31.0, 29.0]}, index=index)
    fig = plots.parameter_study(table, title="FMP")
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "pruned fraction"
    assert "epsilon = 0.06" in fig._suptitle.get_text()


def test_histograms_and_pca_panels_label_their_axes_and_keep_the_legend_outside():
    rng = np.random.default_rng(0)
    scores, poisoned = rng.random(200), np.arange(200) < 20
    fig = plots.score_histograms({"grid3": (scores, poisoned)}, xlabel="FCT")
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("FCT", "density")
    assert _right_of_axes(fig, fig.axes[0], fig.axes[0].get_legend())
    fig = pca_group_panels({"model": {"clean": rng.random((30, 8)), "poisoned": rng.random((30, 8))}})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "principal component 1" and _right_of_axes(fig, ax, ax.get_legend())


def test_the_gallery_comes_in_bands_of_at_most_seven_attacks():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    attacks = [get_attack("grid3")] * 13
    fig = trigger_gallery(attacks, image)
    rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    assert (rows, cols) == (6, 7)  # two bands of clean / poisoned / difference
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(shown) == 3 * 13 and all(ax.title.get_fontsize() >= 8 for ax in shown if ax.get_title())
    assert fig.get_size_inches()[0] * 150 <= 2000  # readable at the saved dpi without a 13-wide strip


def test_save_figure_stamps_the_scale_and_shows_the_png_in_a_kernel_under_agg(tmp_path, monkeypatch):
    import IPython
    import IPython.display
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path))
    fig = plots.metric_bars(pd.DataFrame({"ACC": [50.0]}, index=["a"]), ["ACC"], title="t", xlabel="attack")
    assert not report.show_in_notebook(tmp_path / "none.png")  # no kernel here
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    monkeypatch.setattr(IPython.display, "display", shown.append)
    scale = "smoke profile: CIFAR-10, 5,000 training images, network width 8"
    paths = report.save_figure(fig, "demo", "smoke", scale=scale, attack="grid3")
    paths = report.save_figure(fig, "demo", "smoke", scale=scale, attack="grid3")  # saved twice, stamped once
    assert [t.get_text() for t in fig.texts] == [scale]
    assert json.loads(paths["json"].read_text())["scale"] == scale and paths["png"].stat().st_size > 0
    assert len(shown) == 2 and shown[0].filename == str(paths["png"])
    from PIL import Image
    assert shown[0].width == round(Image.open(paths["png"]).width * 100 / report.FIGURE_DPI)  # at screen size
    report.save_figure(fig, "demo", "smoke")
    assert [t.get_text() for t in fig.texts] == ["smoke profile"]  # the profile at least


@pytest.mark.parametrize("normal, trap, pattern", [(0.8, 1.2, "the paper's pattern"), (1.015, 1.076, "not the"),
                                                    (0.8, 0.9, "not the"), (1.2, 0.9, "the reverse")])
def test_figure2_verdict_follows_the_paper(normal, trap, pattern):
    """Normal training moves the poisoned images nearer the target class (ratio below 1), T&R keeps them with their
    own class (above 1); both ratios above 1 is no drift, not the paper's pattern."""
    assert figure2_verdict(normal, trap).startswith(pattern)
