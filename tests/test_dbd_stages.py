"""DBD stage mechanics on tiny data (width-2 ResNet-18, 64 images): what each stage may change,
interleaving, batching of the credible split, and reuse of cached stages."""
import torch

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import ImageSet
from backdoor_repro.defenses import dbd_stages as st
from backdoor_repro.defenses.dbd import DBDConfig, finetune_stage, head_stage, simclr_backbone
from backdoor_repro.models import build_model
from backdoor_repro.pipeline import ModelSpec
from backdoor_repro.train import TrainConfig

TINY = DBDConfig(st.SimCLRConfig(epochs=1, schedule_epochs=10, batch_size=32),
                 st.HeadConfig(epochs=1, batch_size=32),
                 st.FinetuneConfig(epochs=2, iterations=2, batch_size=8, rampup_epochs=3))


def tiny_set(n=64):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 10, tuple(map(str, range(10))), "tiny")


def tiny_spec():
    return ModelSpec("tiny", None, "resnet18", 2, 10, "badnets_dbd_2x2", {"rate": 0.3}, 0, TrainConfig(epochs=1))


def test_interleave_is_its_own_inverse_and_mixes_chunks():
    chunks = [torch.arange(0, 64), torch.arange(100, 164), torch.arange(200, 264)]
    mixed = st.interleave(chunks)
    assert all(len(m) == 64 for m in mixed)
    assert (mixed[0] >= 100).any() and (mixed[1] < 100).any()  # chunk 0 carries unlabeled samples
    assert all(torch.equal(a, b) for a, b in zip(st.interleave(mixed), chunks))


def test_batches_cycle_through_the_pool():
    pool = torch.arange(10, 30)
    b = st._batches(pool, count=7, batch=6, gen=torch.Generator().manual_seed(0))
    assert b.shape == (7, 6) and set(b.flatten().tolist()) <= set(range(10, 30))
    assert len(set(b[:3].flatten().tolist())) == 18  # no repeats within one pass (drop_last)


def test_head_stage_trains_only_the_head_but_updates_batchnorm_statistics():
    data = tiny_set()
    model = build_model("resnet18", 10, width=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    st.train_head(model, data.images, data.labels, TINY.head, seed=0)
    after = model.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert not torch.equal(before["backbone.bn1.running_mean"], after["backbone.bn1.running_mean"])


def test_stages_are_cached_and_reused(tmp_path):
    data, spec, cache = tiny_set(), tiny_spec(), ArtifactCache(tmp_path)
    model, record = finetune_stage(spec, data, data, TINY, seed=0, cache=cache)
    assert [h["epoch"] for h in record["history"]] == [2, 3]  # after 1 warm-up (head) epoch
    h = record["history"][0]
    assert h["credible"] == 32 and 0 <= h["poisoned_in_credible"] <= h["poisoned_total"] and "ASR" in h
    files = sorted(p.parent.name for p in tmp_path.rglob("*.pt"))
    assert files == ["dbd_finetune", "dbd_head", "dbd_simclr"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    simclr_backbone(spec, data, TINY.simclr, 0, cache)
    head_stage(spec, data, TINY, 0, cache)
    finetune_stage(spec, data, data, TINY, 0, cache)
    assert mtimes == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}  # nothing rebuilt
    ce = TINY.with_(head={"loss": "ce"})
    head_stage(spec, data, ce, 0, cache)  # a new head, the same SimCLR backbone
    assert len(list((tmp_path / "dbd_simclr").glob("*.pt"))) == 1
    assert len(list((tmp_path / "dbd_head").glob("*.pt"))) == 2


def test_defense_registry_and_config_validation():
    import pytest

    from backdoor_repro.defenses import get_defense

    assert hasattr(get_defense("dbd"), "finetune_stage")
    with pytest.raises(ValueError, match="unknown defense"):
        get_defense("nc")
    with pytest.raises(ValueError):
        st.FinetuneConfig(credible_fraction=1.0)
    with pytest.raises(ValueError):
        head_stage(tiny_spec(), tiny_set(), TINY, 0, ArtifactCache(), backbone="imagenet")
