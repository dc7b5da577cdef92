"""The stage graph: a key is derived from the stage's name, config, version and its parents' keys, so a change
upstream gives every downstream stage a new key; defense stages hang off the spec's roots."""
import json

import pytest

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses.dbd import DBD_PROFILES, finetune_graph, head_graph
from backdoor_repro.defenses.fct import FCT_PROFILES, br_graph, classifier_graph
from backdoor_repro.defenses.fct_sd import sd_graph
from backdoor_repro.graph import Stage
from backdoor_repro.resolve import resolve
from backdoor_repro.profiles import get_profile


def test_a_key_follows_the_name_config_version_and_parents():
    root = Stage("root", {"a": 1}, 1)
    child = Stage("child", {"b": 2}, 1, (root,))
    assert child.key == Stage("child", {"b": 2}, 1, (Stage("root", {"a": 1}, 1),)).key  # derived, reproducible
    assert child.key != Stage("child", {"b": 2}, 1, (Stage("root", {"a": 2}, 1),)).key  # upstream config
    assert child.key != Stage("child", {"b": 2}, 1, (Stage("root", {"a": 1}, 2),)).key  # upstream version
    assert child.key != Stage("child", {"b": 2}, 2, (root,)).key
    assert child.ancestors() == [root] and child == Stage("child", {"b": 2}, 1, (root,))
    with pytest.raises(ValueError, match="share a name"):
        Stage("x", {}, 1, (root, Stage("root", {"a": 9}, 1)))


def test_the_cache_stores_a_stage_under_its_key_with_its_parents(tmp_path):
    stage = Stage("child", {"b": 2}, 1, (Stage("root", {"a": 1}, 1),))
    ArtifactCache(tmp_path).get_or_build(stage, lambda _p: {"x": 1})
    meta = json.loads((tmp_path / "child" / f"{stage.key}.json").read_text())
    assert meta["parents"] == [["root", stage.parents[0].key]] and meta["config"] == {"b": 2}


def test_a_change_upstream_reaches_every_downstream_defense_stage(smoke_train):
    spec = resolve(get_profile("smoke"), smoke_train, "grid3", "fct_dst")
    longer = spec.with_(no_defense_schedule=spec.no_defense_schedule.with_(epochs=99))
    cfg = FCT_PROFILES["smoke"]
    # the No-Defense schedule decides D-BR (which starts from that model) but not D-ST's classifier
    assert br_graph(spec, cfg) != br_graph(longer, cfg)
    assert classifier_graph(spec, cfg) == classifier_graph(longer, cfg)
    # SD's config (or its code version) decides everything built on its split
    other_sd = cfg.with_(sd={"alpha_c": 0.3})
    assert sd_graph(spec, other_sd.sd) != sd_graph(spec, cfg.sd)
    assert classifier_graph(spec, other_sd) != classifier_graph(spec, cfg)
    assert br_graph(spec, other_sd) != br_graph(spec, cfg)
    # another data seed: another poisoned set, every stage rebuilt
    assert classifier_graph(spec.with_(data_seed=1), cfg) != classifier_graph(spec, cfg)


def test_dbd_s_ablation_without_ss_hangs_off_the_no_defense_model(smoke_train):
    spec = resolve(get_profile("smoke"), smoke_train, "badnets_dbd_2x2", "dbd")
    cfg = DBD_PROFILES["smoke"]
    without_ss = cfg.with_(backbone="no_defense")
    assert spec.no_defense_stage() in head_graph(spec, without_ss).ancestors()
    assert spec.no_defense_stage() not in head_graph(spec, cfg).ancestors()
    assert head_graph(spec, cfg) in finetune_graph(spec, cfg).ancestors()
    # one SimCLR backbone for the CE and SCE heads: the head config differs, the parents do not
    ce = cfg.with_(head={"loss": "ce"})
    assert head_graph(spec, ce).parents == head_graph(spec, cfg).parents and head_graph(spec, ce) != head_graph(spec, cfg)


def test_a_holdout_that_keeps_the_training_set_rebuilds_only_the_stages_that_read_it(smoke_train):
    """The grid's common protocol grants a class-balanced clean holdout drawn from the training set: DBD and FCT,
    which never read it, reuse their notebooks' stages; FMP's ranking, which reads it, does not."""
    smoke = get_profile("smoke")
    own = resolve(smoke, smoke_train, "grid3", "dbd", rate=0.1, target=0)  # DBD's notebook, FCT's setting
    common = resolve(smoke, smoke_train, "grid3", "dbd", protocol="common")
    assert own.holdout is None and common.holdout is not None
    cfg = DBD_PROFILES["smoke"]
    assert finetune_graph(own, cfg) == finetune_graph(common, cfg)
    assert classifier_graph(own, FCT_PROFILES["smoke"]) == classifier_graph(common, FCT_PROFILES["smoke"])
    assert own.granted_stage() != common.granted_stage()
