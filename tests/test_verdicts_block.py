"""The README's claim verdicts at the cpu scale (orchestration/verdicts.py): a row per claim of each paper notebook's
claims table with the paper's number, ours and the verdict, "not run yet" for a notebook that has not published,
regenerated from the committed tables and never edited by hand."""
import csv
from pathlib import Path

import pytest

from backdoor_repro.orchestration import verdicts
from backdoor_repro.orchestration.readme_block import replace_block

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(60)
FIELDS = ["claim", "paper", "source", "rule", "ours", "verdict", "why"]


def _claims(root, profile, notebook, rows):
    folder = root / "tables" / profile
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{notebook}_claims.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows({**dict.fromkeys(FIELDS, ""), **r} for r in rows)


def test_each_claim_is_a_row_and_a_notebook_without_its_table_reads_not_run_yet(tmp_path):
    _claims(tmp_path, "cpu", "dbd", [
        {"claim": "DBD removes the badnets backdoor (ASR %)", "paper": "0.88", "ours": "3.430", "verdict": "holds"},
        {"claim": "DBD keeps | accuracy", "paper": "2.63", "ours": "30.56", "verdict": "fails"},
        {"claim": "DBD removes the blend backdoor (ASR %)", "paper": "0.31", "ours": "", "verdict": "not run"},
        {"claim": "DBD costs nothing", "paper": "100.00", "ours": "nan", "verdict": "not testable at this scale"}])
    _claims(tmp_path, "cpu", "fmp", [])  # a claims table without a row
    _claims(tmp_path, "cpu", "trap_and_replace", [
        {"claim": "T&R removes it", "paper": "a few %", "ours": "1.5", "verdict": "holds"}])
    lines = verdicts.markdown_table(tmp_path, "cpu").splitlines()
    assert lines[0] == "| paper | claim | the paper's | ours | verdict |"
    assert lines[2:] == [
        "| dbd | DBD removes the badnets backdoor (ASR %) | 0.88 | 3.43 | holds |",
        "| dbd | DBD keeps \\| accuracy | 2.63 | 30.56 | fails |",
        "| dbd | DBD removes the blend backdoor (ASR %) | 0.31 | – | not run |",
        "| dbd | DBD costs nothing | 100 | – | not testable at this scale |",
        "| trap_and_replace | T&R removes it | a few % | 1.5 | holds |",
        "| fct | not run yet | | | |",
        "| fmp | no claim judged | | | |"]  # attacks and grid have no claims table: no row


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        verdicts.markdown_table(tmp_path, "cpuu")
    _claims(tmp_path, "cpu", "fct", [{"claim": "x", "verdict": "probably"}])
    with pytest.raises(ValueError, match="unknown verdicts"):
        verdicts.markdown_table(tmp_path, "cpu")
    with pytest.raises(ValueError, match="claim-verdicts cpu.*exactly once"):
        verdicts.replace_in("# README without the block\n", "block\n", "cpu")


def test_replace_in_swaps_only_the_block():
    start, end = verdicts.markers("cpu")
    text = f"before\n{start}\nold\n{end}\nafter\n"
    assert verdicts.replace_in(text, f"{start}\nnew\n{end}\n", "cpu") == f"before\n{start}\nnew\n{end}\nafter\n"


def test_a_block_is_replaced_whole_and_a_damaged_readme_is_refused():
    block = "<a>\nnew\n</a>\n"
    assert replace_block("x\r\n<a>\r\nold\r\n</a>\r\ny\r\n", "<a>", "</a>", block) == "x\r\n" + block + "y\r\n"
    assert replace_block("<a>\nold\n</a> tail", "<a>", "</a>", block) == block + " tail"  # nothing but a newline eaten
    for damaged, message in (("</a>\n<a>\n", "comes before"), ("<a>\n</a>\n<a>\n</a>\n", "exactly once"),
                             ("<a>\nold\n", "exactly once")):
        with pytest.raises(ValueError, match=message):
            replace_block(damaged, "<a>", "</a>", block)


def test_the_readme_shows_the_cpu_verdicts_the_committed_tables_give():
    assert verdicts.readme_block(REPO, "cpu") in (REPO / "README.md").read_text(), (
        "README.md's cpu claim verdicts differ from the committed tables: "
        "python -m backdoor_repro.orchestration.verdicts cpu --write")
