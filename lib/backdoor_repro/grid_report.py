"""What the grid notebook shows: the cells' records as tidy rows, defense x attack heatmaps, a ranking per attack,
and the cross-paper table (each paper's claimed number, our run in that paper's setting, our run under the common
protocol)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .attacks import ATTACKS
from .defenses import DEFENSES
from .fct_tables import FCT_ACC
from .reported import load_reported

HEATMAP_METRICS = ("ASR", "ACC", "DER")
CLAIM_METRICS = ("ACC", "ASR")


def records_frame(records: list[dict], protocol: str, profile: str, dataset: str) -> pd.DataFrame:
    """Tidy rows (``attack, defense, seed, model, metric, value``) of the non-plumbing cells of ``protocol`` run on
    ``profile`` / ``dataset``; the metrics, the DER and the No-Defense reference (``ND ACC``, ``ND ASR``)."""
    rows = []
    for r in records:
        if r.get("protocol") != protocol or r["profile"] != profile or r["dataset"] != dataset or r["plumbing"]:
            continue
        c = r["cell"]
        values = {**r["metrics"], "DER": r["DER"], "ND ACC": r["no_defense"]["ACC"], "ND ASR": r["no_defense"]["ASR"]}
        for metric, value in values.items():
            rows.append({"attack": c["attack"], "defense": c["defense"], "seed": c["seed"], "model": r["model"],
                         "metric": metric, "value": round(float(value), 2)})
    return pd.DataFrame(rows, columns=["attack", "defense", "seed", "model", "metric", "value"])


def seed_mean(frame: pd.DataFrame) -> pd.DataFrame:
    """``(defense, attack)`` x metric, averaged over seeds."""
    return frame.groupby(["defense", "attack", "metric"], sort=False)["value"].mean().unstack("metric")


def _order(keys, registry) -> list[str]:
    known = [k for k in registry if k in set(keys)]
    return known + sorted(set(keys) - set(known))


def heatmaps(frame: pd.DataFrame, metrics=HEATMAP_METRICS, title: str = ""):
    """One defense x attack panel per metric (seed means), each cell annotated with its value, each panel with its
    colour bar."""
    table = seed_mean(frame)
    defenses = _order(table.index.get_level_values("defense"), DEFENSES)
    attacks = _order(table.index.get_level_values("attack"), ATTACKS)
    fig, axes = plt.subplots(1, len(metrics), figsize=((1.1 * len(attacks) + 2.2) * len(metrics) + 1.0,
                                                       0.45 * len(defenses) + 2.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        grid = table[metric].unstack("attack").reindex(index=defenses, columns=attacks)
        cmap = "RdYlGn_r" if metric == "ASR" else "RdYlGn"
        image = ax.imshow(grid.to_numpy(dtype=float), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03, label=f"{metric} (%)")
        ax.set_xticks(range(len(attacks)), attacks, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(defenses)), defenses, fontsize=8)
        ax.set(title=metric, xlabel="attack", ylabel="defense")
        for i, j in np.ndindex(grid.shape):
            value = grid.iat[i, j]
            ax.text(j, i, "--" if np.isnan(value) else f"{value:.0f}", ha="center", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def ranking(frame: pd.DataFrame) -> pd.DataFrame:
    """Per attack, the defenses ranked by DER (then by ACC): rank 1 = the best trade-off of ASR removed against
    accuracy lost. No Defense is left out (its DER is 50 by definition)."""
    table = seed_mean(frame).reset_index()
    table = table[table["defense"] != "none"]
    table = table.sort_values(["attack", "DER", "ACC"], ascending=[True, False, False])
    table["rank"] = table.groupby("attack").cumcount() + 1
    return table[["attack", "rank", "defense", "DER", "ACC", "ASR", "ND ACC", "ND ASR"]].reset_index(drop=True)


def claimed_cells(defenses, datasets=("CIFAR-10",)) -> list[tuple[str, str]]:
    """``(defense, attack)`` pairs with a per-attack ACC or ASR claim in ``tables/reported`` (registry keys only)."""
    claims = _claims(defenses, datasets)
    return list(dict.fromkeys(zip(claims["defense"], claims["attack"])))


def _claims(defenses, datasets) -> pd.DataFrame:
    df = load_reported()
    keep = (df["defense"].isin(list(defenses)) & df["attack"].isin(list(ATTACKS)) & df["metric"].isin(CLAIM_METRICS)
            & df["dataset"].isin(list(datasets)))
    return df[keep]


def cross_paper(defenses, own: pd.DataFrame, common: pd.DataFrame, datasets=("CIFAR-10",)) -> pd.DataFrame:
    """One row per claimed number: the claim (paper, table, its setting), our run in that defense's own paper's
    protocol and under the common protocol (seed means; empty where that cell has not run)."""
    own_means, common_means = seed_mean(own) if len(own) else None, seed_mean(common) if len(common) else None

    def lookup(means, defense, attack, metrics):
        """``(value, metric)`` of the first of ``metrics`` the cell has, or ``(nan, None)``."""
        if means is None or (defense, attack) not in means.index:
            return np.nan, None
        for metric in metrics:
            if metric in means.columns and pd.notna(means.loc[(defense, attack), metric]):
                return round(float(means.loc[(defense, attack), metric]), 2), metric
        return np.nan, None

    rows = []
    for _, c in _claims(defenses, datasets).iterrows():
        metrics = list(dict.fromkeys([measured_as(c), c["metric"]]))  # all-to-all has no target: ACC on every image
        own, own_metric = lookup(own_means, c["defense"], c["attack"], metrics)
        common, common_metric = lookup(common_means, c["defense"], c["attack"], metrics)
        used = " / ".join(dict.fromkeys(m for m in (own_metric, common_metric) if m))
        rows.append({"defense": c["defense"], "attack": c["attack"], "metric": c["metric"], "claimed": c["value"],
                     "claim": f"{c['paper']}:{c['table']} ({c['defense_name']} on {c['attack_name']}, {c['model']})",
                     "ours, own protocol": own, "ours, common protocol": common,
                     "ours measured as": used or metrics[0]})
    return merge_repeated_claims(pd.DataFrame(rows, columns=["defense", "attack", "metric", "claimed",
                                                             "ours, own protocol", "ours, common protocol",
                                                             "ours measured as", "claim"]))


def merge_repeated_claims(cross: pd.DataFrame) -> pd.DataFrame:
    """One row per claimed number: rows equal in everything but ``claim`` (one number quoted by several tables, e.g.
    FCT's README and its paper, or DBD's numbers re-run by the FCT authors as both papers' files list them) become
    one row, their sources joined by ``; `` in ``claim``."""
    keys = [c for c in cross.columns if c != "claim"]
    merged = cross.groupby(keys, sort=False, dropna=False)["claim"].agg(lambda s: "; ".join(dict.fromkeys(s)))
    return merged.reset_index()[list(cross.columns)]


def without_empty_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``(frame without its all-missing columns, their names)``: e.g. the cross-paper table's common-protocol column
    on a profile whose grid runs none of the claimed cells."""
    empty = [c for c in frame.columns if frame[c].isna().all()] if len(frame) else []
    return frame.drop(columns=empty), empty


def measured_as(claim) -> str:
    """Our metric that matches a claimed one: FCT measures ACC on the non-target test images (``fct_tables``), in
    its own tables and in the DBD numbers it re-ran (``secondary_fct_*`` in DBD's file); every other claim as named."""
    if claim["metric"] == "ACC" and (claim["paper"] == "fct" or "fct" in claim["table"]):
        return FCT_ACC
    return claim["metric"]


def conclusion(cross: pd.DataFrame, ranks: pd.DataFrame, scale: str) -> str:
    """The grid's tables in a few sentences: how many claimed numbers have a run of ours beside them, in which
    protocol, and the best defense per attack under the common protocol (rank 1 by DER), at the run's ``scale``."""
    found = {p: int(cross[f"ours, {p} protocol"].notna().sum()) if f"ours, {p} protocol" in cross else 0
             for p in ("own", "common")}
    sentences = [f"On this run ({scale}): the papers claim {len(cross)} per-attack numbers for the registered "
                 f"defenses; {found['own']} have our run in the claim's own protocol beside them and "
                 f"{found['common']} our run under the common protocol (the others have not run on this profile)."]
    best = ranks[ranks["rank"] == 1] if len(ranks) else ranks
    if len(best):
        sentences.append("Under the common protocol the best trade-off (highest DER) is " + "; ".join(
            f"{r.defense} on {r.attack} (DER {r.DER:.1f}, ASR {r.ASR:.1f}, ACC {r.ACC:.1f})"
            for r in best.itertuples()) + ".")
    return " ".join(sentences)
