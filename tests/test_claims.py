"""The claims' verdict rule on hand-made tables: not run, not testable at this scale, holds, fails."""
import pandas as pd

from backdoor_repro.claims import (LEARNED_ACC, Claim, conclusion, keeps_accuracy, learned_summary, removes, summary,
                                   verdicts)
from backdoor_repro.defenses import DEFENSES


def _table(tmp_path, nd_acc, nd_asr, dbd_acc, dbd_asr):
    rows = [("badnets_dbd_2x2", "none", "ACC", nd_acc), ("badnets_dbd_2x2", "none", "ASR", nd_asr),
            ("badnets_dbd_2x2", "dbd", "ACC", dbd_acc), ("badnets_dbd_2x2", "dbd", "ASR", dbd_asr)]
    pd.DataFrame(rows, columns=["attack", "defense", "metric", "value"]).to_csv(tmp_path / "t1.csv")
    return tmp_path


CLAIMS = (removes("t1", "badnets_dbd_2x2", "dbd", 0.88, "README", "DBD"),
          keeps_accuracy("t1", "badnets_dbd_2x2", "dbd", 2.63, "README", "DBD"),
          Claim("quoted", "a number shown beside ours", 83.33, "paper"))


def test_a_claim_holds_or_fails_by_its_rule_once_the_no_defense_model_learned_both_tasks(tmp_path):
    held = verdicts(CLAIMS, _table(tmp_path, 90.0, 100.0, 88.0, 1.0), ["badnets_dbd_2x2"])
    assert list(held["verdict"]) == ["holds", "holds"]  # the quoted number is not judged
    assert list(held["ours"]) == [1.0, 2.0] and list(held["rule"]) == ["ours <= 5", "ours <= 4.63"]
    failed = verdicts(CLAIMS, _table(tmp_path, 90.0, 100.0, 80.0, 30.0), ["badnets_dbd_2x2"])
    assert list(failed["verdict"]) == ["fails", "fails"] and summary(failed) == "2 claims: 2 fails"


def test_a_claim_on_a_model_that_never_learned_the_tasks_is_not_testable(tmp_path):
    weak = verdicts(CLAIMS, _table(tmp_path, LEARNED_ACC - 0.1, 100.0, 50.0, 1.0), ["badnets_dbd_2x2"])
    assert set(weak["verdict"]) == {"not testable at this scale"} and "ACC 79.9" in weak["why"][0]
    absent = verdicts(CLAIMS, _table(tmp_path, 90.0, 100.0, 88.0, 1.0), ["grid3"])
    assert set(absent["verdict"]) == {"not run"}


def test_every_paper_s_main_defense_has_judged_claims_on_both_cpu_attacks():
    """The cpu profile's claims tables name each paper's main defense's effect on both of its attacks, each attack
    in a row of its own (FMP's means over its attacks too)."""
    expected = {"dbd": ("badnets_dbd_2x2", "blend_kitty_dbd"), "trap_and_replace": ("grid3_tr", "blend_kitty_tr"),
                "fct_dbr": ("grid3", "blend_kitty_fct"), "fmp": ("white3_bb", "blend_kitty_bb")}
    for key, attacks in expected.items():
        record = DEFENSES[key].record
        judged = [c for c in record.claims_for(record.attacks_for("cpu", "cifar10")) if c.ours is not None]
        assert {a for c in judged for a in c.attacks} >= set(attacks), key
        assert all(any(c.attacks == (a,) and "ASR" in c.text for c in judged) for a in attacks), key  # each alone


def test_the_closing_sentences_say_what_held_what_failed_and_what_could_not_be_tested(tmp_path):
    scale = "smoke profile: CIFAR-10, 5,000 training images, network width 8"
    mixed = verdicts(CLAIMS, _table(tmp_path, 90.0, 100.0, 80.0, 1.0), ["badnets_dbd_2x2"])  # ASR holds, ACC fails
    text = conclusion(mixed, scale)
    assert text.startswith(f"On this run ({scale}): 2 claims: 1 holds, 1 fails.")
    assert "Held: DBD removes the badnets_dbd_2x2 backdoor (ASR %) (paper 0.88, ours 1.0)." in text
    assert "Did not hold: DBD keeps clean accuracy" in text and "not testable" not in text.lower()
    weak = conclusion(verdicts(CLAIMS, _table(tmp_path, 49.0, 96.7, 25.0, 60.0), ["badnets_dbd_2x2"]), scale)
    assert "Not testable at this scale (2)" in weak and "badnets_dbd_2x2: No Defense: ACC 49.0, ASR 96.7" in weak
    assert weak.count("No Defense: ACC") == 1 and "Held" not in weak  # one No-Defense model, named once
    assert conclusion(verdicts((), tmp_path, []), scale) == f"No claim of this paper was judged on this run ({scale})."


def test_the_no_defense_summary_names_where_both_tasks_were_learned():
    table = pd.DataFrame({"ACC": [85.0, 49.0], "ASR": [95.0, 99.0]}, index=["grid3", "blend"])
    text = learned_summary(table, "cpu profile")
    assert "clean accuracy 49.0 to 85.0 % and ASR 95.0 to 99.0 %" in text
    assert text.endswith("judged, on: grid3; not learned on: blend.")
