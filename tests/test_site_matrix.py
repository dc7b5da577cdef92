"""The results matrix and the site's build without a browser (issue 30): statuses derived from the outputs on disk
and the claims tables' verdicts, never declared; the catalogue names outputs the runs write; bad input refused before
anything is written; a failed build leaves the previous site as it was."""
import json
from pathlib import Path

import pytest

from backdoor_repro.orchestration import matrix as m
from backdoor_repro.orchestration import site as site_module
from backdoor_repro.orchestration.matrix import Item, judge, matrix, profiles_on_disk, read_claims
from backdoor_repro.orchestration.site import build_site, main
from backdoor_repro.profiles import PROFILES

REPO = Path(__file__).resolve().parents[1]
GPU_ONLY = {"tables/fct_t4_ssctl_ablation", "tables/tr_l2_inv_question"}  # fast / paper sections
ITEM = Item("T1", "a table and a figure", ("t1",), ("f1",), claims="removes")


def claims_csv(path: Path, *verdicts: str, claim: str = "D removes the x backdoor") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f'"{claim} {i}",1.0,src,ours <= 5,{i},{v},\n' for i, v in enumerate(verdicts))
    path.write_text("claim,paper,source,rule,ours,verdict,why\n" + rows)
    return path


@pytest.mark.parametrize("found, verdicts, status", [
    (("tables/t1", "figures/f1"), ("holds", "holds"), "reproduced"),
    (("tables/t1",), ("holds", "holds"), "partly"),  # a figure missing
    (("tables/t1", "figures/f1"), ("holds", "not testable at this scale"), "partly"),
    (("tables/t1", "figures/f1"), ("holds", "fails"), "partly"),
    (("tables/t1", "figures/f1"), ("fails", "not testable at this scale"), "not"),  # none holds, one fails
    (("tables/t1", "figures/f1"), ("not testable at this scale",) * 3, "partly"),  # every smoke verdict
    (("tables/t1", "figures/f1"), ("not run",), "partly"),
    ((), ("holds",), "not"),  # nothing written on this profile
])
def test_a_status_follows_the_outputs_and_the_verdicts(tmp_path, found, verdicts, status):
    rows = read_claims(claims_csv(tmp_path / "x_claims.csv", *verdicts))
    cell = judge(ITEM, found, rows)
    assert cell.status == status, cell.why
    if found:
        assert dict(cell.verdicts) == {v: verdicts.count(v) for v in set(verdicts)}


def test_without_claims_or_outputs_the_reason_says_so():
    assert judge(Item("F", "a figure"), (), None).why == "this companion writes nothing for it"
    assert judge(ITEM, ("tables/t1", "figures/f1"), None).why == "all 2 outputs written; no claims table"
    judged_by_none = judge(Item("F", "f", figures=("f1",)), ("figures/f1",), None)
    assert (judged_by_none.status, judged_by_none.why) == ("partly", "its output written; no claim judges it")
    other = judge(ITEM, ("tables/t1", "figures/f1"), [{"claim": "something else", "verdict": "holds"}])
    assert (other.status, other.why) == ("partly", "all 2 outputs written; no claim judges it")


def test_a_malformed_claims_table_is_refused(tmp_path):
    (tmp_path / "a.csv").write_text("claim,paper\nx,1\n")
    with pytest.raises(ValueError, match="no column verdict"):
        read_claims(tmp_path / "a.csv")
    with pytest.raises(ValueError, match="unknown verdicts \\['maybe'\\]"):
        read_claims(claims_csv(tmp_path / "b.csv", "holds", "maybe"))
    assert read_claims(tmp_path / "absent.csv") is None


def test_the_matrix_reads_each_profiles_outputs_and_claims(tmp_path):
    for profile in ("smoke", "fast"):
        (tmp_path / "tables" / profile).mkdir(parents=True)
        (tmp_path / "tables" / profile / "dbd_table1.csv").write_text("a\n1\n")
        (tmp_path / "tables" / profile / "dbd_table1_vs_reported.md").write_text("| a |\n|---|\n| 1 |\n")
    claims_csv(tmp_path / "tables" / "fast" / "dbd_claims.csv", "holds", "holds")
    claims_csv(tmp_path / "tables" / "smoke" / "dbd_claims.csv", "not testable at this scale")
    cells = matrix(tmp_path, ["smoke", "fast", "paper"])
    t0 = cells[("dbd", "DBD-T0")]
    assert (t0["fast"].status, t0["smoke"].status, t0["paper"].status) == ("reproduced", "partly", "not")
    assert t0["fast"].found == ("tables/dbd_table1", "tables/dbd_table1_vs_reported")
    assert cells[("dbd", "DBD-F1")]["fast"].status == "not"  # its figure is not there


def test_a_paper_with_no_output_on_a_profile_reads_not_run_yet(tmp_path):
    """A profile under way (cpu, in slices) has published some notebooks: the others are not run yet, not failed."""
    for profile in ("smoke", "cpu"):
        (tmp_path / "tables" / profile).mkdir(parents=True)
        (tmp_path / "tables" / profile / "no_defense.csv").write_text("a\n1\n")
    (tmp_path / "tables" / "smoke" / "dbd_table1.csv").write_text("a\n1\n")
    rows = {line.split(" | ")[0]: line for line in m.markdown_summary(tmp_path, ["smoke", "cpu"]).splitlines()}
    assert rows["| dbd"].endswith("| not run yet |") and "not run yet" not in rows["| dbd"].split(" | ")[1]
    assert "not run yet" not in rows["| attacks"]


def test_profiles_on_disk_are_run_folders_in_profile_order(tmp_path):
    for name in ("reported", "benchmarks", "paper", "fast-gtsrb", "smoke", "fast", "cpu-dry-run"):
        (tmp_path / "tables" / name).mkdir(parents=True)
    (tmp_path / "figures" / "smoke").mkdir(parents=True)
    assert profiles_on_disk(tmp_path) == ["smoke", "cpu-dry-run", "fast", "fast-gtsrb", "paper"]


def test_the_catalogue_knows_every_profile_and_names_outputs_the_smoke_run_writes():
    assert set(m.PROFILE_NAMES) == set(PROFILES)
    smoke = {f"tables/{p.stem}" for p in (REPO / "tables" / "smoke").glob("*.csv")} | \
            {f"figures/{p.stem}" for p in (REPO / "figures" / "smoke").glob("*.png")}
    named = {o for paper in m.PAPERS for item in paper.items for o in item.outputs}
    assert not named - smoke - GPU_ONLY, "outputs in the catalogue that no run writes"
    assert not {o for o in smoke if not o.endswith("_claims")} - named, "outputs no item of the matrix shows"
    assert [p.notebook for p in m.PAPERS] == ["attacks", "dbd", "trap_and_replace", "fct", "fmp", "grid"]
    assert all((REPO / "notebooks" / f"{p.notebook}.ipynb").exists() for p in m.PAPERS)


def fake_root(tmp_path: Path) -> tuple[Path, Path]:
    """A run's outputs: a table as CSV and Markdown, a figure, a run record and one executed notebook."""
    root = tmp_path / "out"
    (root / "tables" / "smoke").mkdir(parents=True)
    (root / "figures" / "smoke").mkdir(parents=True)
    (root / "tables" / "smoke" / "no_defense.csv").write_text("attack,ACC\ngrid3,<b>49.0</b>\n")
    (root / "tables" / "smoke" / "no_defense.md").write_text("| attack | ACC |\n|:--|--:|\n| grid3 | 49.0 |\n")
    (root / "tables" / "smoke" / "tr_main.csv").write_text("attack,ACC\ngrid3,<b>49.0</b>\n")
    (root / "tables" / "smoke" / "attacks_run.json").write_text("{}")
    (root / "figures" / "smoke" / "attacks_gallery.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    executed = root / "executed"
    executed.mkdir()
    notebook = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# Attacks\nhello"}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (executed / "attacks.ipynb").write_text(json.dumps(notebook))
    (executed / ".attacks.p1-2.running.ipynb").write_text(json.dumps(notebook))  # a run in progress: not a page
    return root, executed


@pytest.mark.timeout(120)
def test_the_site_holds_the_matrix_a_page_per_notebook_and_table_and_the_figures(tmp_path):
    root, executed = fake_root(tmp_path)
    out, counts = build_site("smoke", root=root, notebooks=executed)
    assert out == root / "site" / "smoke" and counts == {"notebooks": 1, "tables": 2, "figures": 1}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "attacks.html", "figures/attacks_gallery.png", "index.html", "tables/attacks_run.json",
        "tables/no_defense.csv", "tables/no_defense.html", "tables/no_defense.md", "tables/tr_main.csv",
        "tables/tr_main.html"]
    index = (out / "index.html").read_text()
    assert 'href="attacks.html"' in index and 'src="figures/attacks_gallery.png"' in index
    assert 'href="tables/no_defense.html"' in index and "Results matrix" in index
    assert index.count('class="status ') >= sum(len(p.items) for p in m.PAPERS)
    assert "<b>" not in (out / "tables" / "tr_main.html").read_text()  # a CSV's cells are escaped
    assert "<table>" in (out / "tables" / "no_defense.html").read_text()  # the Markdown table rendered
    page = (out / "attacks.html").read_text()
    assert "hello" in page and 'href="index.html"' in page and "cdnjs" not in page
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_failed_build_leaves_the_previous_site_and_no_temporary_folder(tmp_path, monkeypatch):
    root, executed = fake_root(tmp_path)
    out, _ = build_site("smoke", root=root, notebooks=executed)
    before = (out / "index.html").read_text()

    def broken(path, profile):
        raise RuntimeError("nbconvert failed")
    monkeypatch.setattr(site_module, "notebook_html", broken)
    with pytest.raises(RuntimeError, match="nbconvert failed"):
        build_site("smoke", root=root, notebooks=executed)
    assert (out / "index.html").read_text() == before
    assert [p.name for p in out.parent.iterdir()] == ["smoke"]


@pytest.mark.parametrize("args, message", [
    (["--profile", "../smoke"], "must be a run name"),
    (["--profile", "smoke", "--notebooks", "/nonexistent/executed"], "is not a folder"),
    (["--profile", "paper"], "nothing to build for profile 'paper'"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, capsys, args, message):
    root, _ = fake_root(tmp_path)
    assert main([*args, "--root", str(root)]) == 2
    assert message in capsys.readouterr().err
    assert not (root / "site").exists()


def test_the_readme_matrix_is_the_one_the_committed_outputs_give():
    """The README's first screen shows the matrix of the committed tables and figures, regenerated, never edited by
    hand: after a run publishes, `python -m backdoor_repro.orchestration.matrix` prints the block to paste."""
    readme = (REPO / "README.md").read_text()
    assert m.readme_block(REPO) in readme
