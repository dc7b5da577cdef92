"""The claims' verdict rule on hand-made tables: not run, not testable at this scale, holds, fails."""
import pandas as pd

from backdoor_repro.claims import LEARNED_ACC, Claim, keeps_accuracy, removes, summary, verdicts
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
    """The cpu profile's claims tables name each paper's main defense's effect on both of its attacks."""
    expected = {"dbd": ("badnets_dbd_2x2", "blend_kitty_dbd"), "trap_and_replace": ("grid3_tr", "blend_kitty_tr"),
                "fct_dbr": ("grid3", "blend_kitty_fct"), "fmp": ("white3_bb", "blend_kitty_bb")}
    for key, attacks in expected.items():
        record = DEFENSES[key].record
        judged = [c for c in record.claims_for(record.attacks_for("cpu", "cifar10")) if c.ours is not None]
        assert {a for c in judged for a in c.attacks} >= set(attacks), key
