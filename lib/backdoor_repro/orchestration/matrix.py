"""The results matrix (issue 30): each paper's tables and figures, the items its spec lists (shared/papers/<paper>.md),
judged reproduced / partly / not on each profile from what the runs left on disk.

:data:`PAPERS` says which of our outputs stand for each item and which claims of the notebook's claims table
(``tables/<profile>/<notebook>_claims.csv``, written by ``Experiment.claims``) judge it; it holds no status. A status
is derived (:func:`judge`):

* **not**: the companion writes nothing for the item, none of its outputs is on disk for the profile, or claims
  that judge it fail and none holds;
* **reproduced**: every output is written and every claim that judges it holds (at least one);
* **partly**: the rest: some outputs missing, claims not testable at this scale or not run, some failing, or no
  claim judging the item (a figure is written; whether it shows the paper's pattern is said in the notebook).

Standard library only: the site and ``run_all.sh``'s summary read it without torch.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("reproduced", "partly", "not")
PROFILE_NAMES = ("smoke", "cpu", "fast", "paper")  # profiles.PROFILES (tests/test_site_matrix.py checks they agree)
VERDICTS = ("holds", "fails", "not testable at this scale", "not run")  # claims.verdict
CLAIM_COLUMNS = ("claim", "verdict")


@dataclass(frozen=True)
class Item:
    """One table or figure of a paper's spec and the outputs that stand for it. ``claims``: a regular expression
    over the claim texts of the notebook's claims table that judge it (None: none does)."""

    id: str
    what: str
    tables: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    claims: str | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f"tables/{t}" for t in self.tables) + tuple(f"figures/{f}" for f in self.figures)


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    spec: str  # its spec, under shared/
    notebook: str
    items: tuple[Item, ...]


PAPERS = (
    Paper("attacks", "The attacks shared by the four papers", "papers/attacks.md", "attacks", (
        Item("gallery", "every trigger: clean, poisoned, amplified difference", figures=("attacks_gallery",)),
        Item("no-defense", "No Defense per attack (ACC, ASR, RA, CTR), beside the papers' Backdoored rows",
             ("no_defense", "no_defense_vs_reported"), ("no_defense",)),
    )),
    Paper("dbd", "DBD: Backdoor Defense via Decoupling the Training Process (ICLR 2022)", "papers/dbd.md", "dbd", (
        Item("DBD-T0", "README results: No Defense vs DBD on BadNets and Blended",
             ("dbd_table1", "dbd_table1_vs_reported"), claims=".*"),
        Item("DBD-T1", "Table 1: No Defense vs DBD per attack (the baselines NC, NAD, DPSGD, ShrinkPad are not run)",
             ("dbd_table1",)),
        Item("DBD-T2", "ablation: without SS, SS + CE head, SS + SCE head, supervised tuning, DBD",
             ("dbd_table2_ablation", "dbd_table2_ablation_curves")),
        Item("DBD-F1", "t-SNE of the features, supervised vs SimCLR, poisoned samples marked",
             figures=("dbd_figure1_tsne",)),
        Item("DBD-alpha", "filtering-rate sweep, adaptive attack, other poisoning rates"),
        Item("credible split", "poisoned samples in the credible half per epoch; SCE-loss AUROC",
             ("dbd_credible_split",), ("dbd_credible_split",)),
        Item("detection", "the last credible split as a poisoned-sample detector", ("dbd_detection",)),
        Item("cross-paper", "DBD under its README setting and under FCT's", ("dbd_cross_paper_check",)),
    )),
    Paper("trap_and_replace", "Trap and Replace (NeurIPS 2022)", "papers/trap_replace.md", "trap_and_replace", (
        Item("TR-T-min", "No Defense, no trap and T&R per attack and seed", ("tr_main", "tr_main_summary"),
             claims=".*"),
        Item("TR-T1", "the abstract's gains over the previous state of the art (its baselines are not rerun)",
             ("tr_headline_ours",)),
        Item("TR-F2", "PCA of stem features, normal training vs T&R; distances to the target class",
             ("tr_figure2_distances",), ("tr_figure2_pca",)),
        Item("TR-A", "ablations: stem end, reconstruction weight, no trap", ("tr_ablation",)),
        Item("l2-inv", "l2-inv per seed beside the official issue #3", ("tr_l2_inv_question",)),
    )),
    Paper("fct", "FCT with D-ST and D-BR: Effective Backdoor Defense by Exploiting Sensitivity of Poisoned Samples "
                 "(NeurIPS 2022)", "papers/fct.md", "fct", (
        Item("FCT-T1", "Backdoored, D-BR and D-ST per attack, beside the README", ("fct_t1", "fct_t1_vs_reported"),
             claims="removes|keeps clean accuracy"),
        Item("FCT-T2", "D-ST vs DBD under FCT's settings", ("fct_t2_dst_vs_dbd", "fct_t2_vs_reported",
                                                             "fct_t2_verdict"), claims="FCT's setting"),
        Item("FCT-T3", "D-BR vs No Defense, fine-tuning on D_c, unlearning only; the other baselines quoted",
             ("fct_t3_dbr_vs_baselines", "fct_t3_quoted_baselines")),
        Item("FCT-T4", "SS-CTL ablation: CTL, S-CTL, SS-CTL encoders", ("fct_t4_ssctl_ablation",)),
        Item("FCT-F1", "FCT histograms, clean vs poisoned", figures=("fct_histograms",)),
        Item("FCT-F2", "D-BR with the FCT replaced by other sample-separation metrics"),
        Item("FCT-F4", "ACC / ASR curves of unlearning, relearning and the alternating BR", figures=("fct_br_curves",)),
        Item("split", "D_c purity, D_p precision and recall, thresholds", ("fct_sample_distinguishment",),
             ("fct_split_quality",)),
    )),
    Paper("fmp", "FMP: Adversarial Feature Map Pruning for Backdoor (ICLR 2024)", "papers/fmp.md", "fmp", (
        Item("FMP-T1", "FMP, FT, FP and ANP per attack (ACC, ASR, RA); the abstract's averages",
             ("fmp_t1", "fmp_t1_average_vs_reported"), claims=".*"),
        Item("FMP-F-param", "parameter study: FGSM epsilon and prune fraction", ("fmp_parameter_study",),
             ("fmp_parameter_study",)),
        Item("FMP-F-cov", "share of the backdoor feature maps each pruning method removes",
             ("fmp_feature_map_coverage",)),
        Item("ANP threshold", "ANP's pruning threshold: the rule on the clean holdout vs every threshold on test",
             ("fmp_anp_threshold_sweep",)),
        Item("bugs", "the official code's two bugs as switches", ("fmp_bug_switches",)),
        Item("triggers", "BackdoorBench's triggers", figures=("fmp_triggers",)),
    )),
    Paper("grid", "All defenses against all attacks under one protocol", "DESIGN.md", "grid", (
        Item("grid", "every defense x attack: ACC, ASR, ranking, heatmaps", ("grid_common", "grid_ranking"),
             ("grid_heatmaps",)),
        Item("cross-paper", "the papers' claims beside the common protocol's numbers", ("grid_cross_paper",)),
    )),
)


@dataclass(frozen=True)
class Cell:
    """An item on one profile: its status, why, the outputs found (``tables/<stem>``, ``figures/<stem>``) and the
    verdicts of the claims that judge it."""

    status: str
    why: str
    found: tuple[str, ...] = ()
    verdicts: tuple[tuple[str, int], ...] = ()


def read_claims(path: Path) -> list[dict] | None:
    """The rows of a claims table (None: there is none). A table without the ``claim`` and ``verdict`` columns, or
    with a verdict that is not one of :data:`VERDICTS`, is refused."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CLAIM_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: not a claims table (no column {', '.join(missing)})")
        rows = list(reader)
    unknown = sorted({r["verdict"] for r in rows} - set(VERDICTS))
    if unknown:
        raise ValueError(f"{path}: unknown verdicts {unknown}; expected one of {', '.join(VERDICTS)}")
    return rows


def found_outputs(item: Item, tables: Path, figures: Path) -> tuple[str, ...]:
    """The item's outputs on disk: a table as ``<stem>.csv`` or ``.md``, a figure as ``<stem>.png``."""
    have = [f"tables/{t}" for t in item.tables if (tables / f"{t}.csv").is_file() or (tables / f"{t}.md").is_file()]
    return tuple(have + [f"figures/{f}" for f in item.figures if (figures / f"{f}.png").is_file()])


def judge(item: Item, found: tuple[str, ...], claims: list[dict] | None) -> Cell:
    """The status of ``item`` given the outputs ``found`` and the notebook's claims rows (None: no claims table)."""
    if not item.outputs:
        return Cell("not", "this companion writes nothing for it")
    if not found:
        return Cell("not", "not run on this profile")
    missing = [o for o in item.outputs if o not in found]
    written = (f"{len(found)} of {len(item.outputs)} outputs written (missing {', '.join(missing)})" if missing
               else "its output written" if len(found) == 1 else f"all {len(found)} outputs written")
    if item.claims is None:
        return Cell("partly", f"{written}; no claim judges it", found)
    if claims is None:
        return Cell("partly", f"{written}; no claims table", found)
    rows = [r for r in claims if re.search(item.claims, r["claim"])]
    counts = Counter(r["verdict"] for r in rows)
    verdicts = tuple((v, counts[v]) for v in VERDICTS if counts[v])
    said = ", ".join(f"{n} {v}" for v, n in verdicts) or "no claim judges it"
    if counts["holds"] and counts["holds"] == len(rows) and not missing:
        return Cell("reproduced", f"{written}; {said}", found, verdicts)
    if counts["fails"] and not counts["holds"]:
        return Cell("not", f"{written}; {said}", found, verdicts)
    return Cell("partly", f"{written}; {said}", found, verdicts)


def profiles_on_disk(root: Path) -> list[str]:
    """The run names with outputs under ``root``: ``tables/<name>/`` or ``figures/<name>/`` where ``name`` is a
    profile, optionally with a dataset or dry-run suffix (``fast-gtsrb``, ``fast-dry-run``), in profile order."""
    names = {p.name for kind in ("tables", "figures") for p in (root / kind).glob("*") if p.is_dir()}
    runs = [n for n in names if n.split("-")[0] in PROFILE_NAMES]
    return sorted(runs, key=lambda n: (PROFILE_NAMES.index(n.split("-")[0]), n))


def matrix(root: Path, profiles) -> dict[tuple[str, str], dict[str, Cell]]:
    """``{(paper key, item id): {profile: Cell}}`` for every item of :data:`PAPERS` on each of ``profiles``."""
    result = {}
    for paper in PAPERS:
        for profile in profiles:
            tables, figures = root / "tables" / profile, root / "figures" / profile
            claims = read_claims(tables / f"{paper.notebook}_claims.csv")
            for item in paper.items:
                cell = judge(item, found_outputs(item, tables, figures), claims)
                result.setdefault((paper.key, item.id), {})[profile] = cell
    return result


README_MARKERS = ("<!-- results-matrix: generated by python -m backdoor_repro.orchestration.matrix -->",
                  "<!-- /results-matrix -->")


def markdown_summary(root: Path, profiles) -> str:
    """The matrix in one Markdown table for the README's first screen: a row per paper, a column per profile, each
    cell the count of its items per status (the site's index has the items and why), or "not run yet" where the
    profile holds none of the paper's outputs (a profile under way: its notebook has not published)."""
    cells = matrix(root, profiles)
    lines = ["| paper | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for paper in PAPERS:
        row = []
        for profile in profiles:
            of_paper = [cells[(paper.key, item.id)][profile] for item in paper.items]
            if not any(cell.found for cell in of_paper):
                row.append("not run yet")
                continue
            counts = Counter(cell.status for cell in of_paper)
            row.append(", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
        lines.append(f"| {paper.notebook} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def readme_block(root: Path) -> str:
    """The README's results-matrix block, markers included, from the committed outputs under ``root``."""
    profiles = [p for p in profiles_on_disk(root) if p in PROFILE_NAMES]
    return f"{README_MARKERS[0]}\n{markdown_summary(root, profiles)}{README_MARKERS[1]}\n"


def main(argv=None) -> None:
    """Print (or, with --write, put into README.md) the results-matrix block of the checkout's committed outputs."""
    import argparse
    from ..paths import project_root
    from .readme_block import print_or_write
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="replace the block in README.md")
    args = parser.parse_args(argv)
    print_or_write(readme_block(project_root()), *README_MARKERS, args.write)


if __name__ == "__main__":
    main()
