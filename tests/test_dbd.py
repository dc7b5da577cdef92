"""DBD stage mechanics on tiny data (width-4 ResNet-18, 64 images): what each stage may change,
interleaving, batching of the credible split, one SimCLR forward over both views, reuse of cached
stages, and the ablation rows as configs.

Width 4, not 2: a width-2 network has a 1x1 stride-2 shortcut convolution from 2 channels, the shape
on which oneDNN's AVX2 backward kernel hangs or crashes (with channels_last inputs) on some CPUs."""
import pytest
import torch

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import ImageSet
from backdoor_repro.defenses import dbd_stages as st
from backdoor_repro.defenses import get_defense
from backdoor_repro.defenses.dbd import DBDConfig, dbd_ablation, head_stage, simclr_stage
from backdoor_repro.models import build_model
from backdoor_repro.pipeline import run_data
from backdoor_repro.spec import RunSpec
from backdoor_repro.train import TrainConfig

TINY = DBDConfig(st.SimCLRConfig(epochs=1, schedule_epochs=10, batch_size=32),
                 st.HeadConfig(epochs=1, batch_size=32),
                 st.FinetuneConfig(epochs=2, iterations=2, batch_size=8, rampup_epochs=3))
WIDTH = 4


def tiny_set(n=64):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 10, tuple(map(str, range(10))), "tiny")


def tiny_spec(data=None):
    return RunSpec("tiny", None, "resnet18", WIDTH, 10, "badnets_dbd_2x2", {"rate": 0.3}, 0, 0,
                   TrainConfig(epochs=1, batch_size=32, augmentation="none")).bound_to(data or tiny_set())


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
    model = build_model("resnet18", 10, width=WIDTH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    st.train_head(model, data.images, data.labels, TINY.head, seed=0)
    after = model.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert not torch.equal(before["backbone.bn1.running_mean"], after["backbone.bn1.running_mean"])


def test_simclr_runs_one_forward_over_both_views():
    """The official step runs the network once on the 2b views, so BatchNorm normalises them together."""
    data = tiny_set(48)
    clf = build_model("resnet18", 10, width=WIDTH)
    model = st.SelfSupervised(clf.backbone, clf.normalize, 16)
    sizes = []
    model.backbone.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    st.train_simclr(model, data.images, st.SimCLRConfig(epochs=1, schedule_epochs=10, batch_size=32), seed=0)
    assert sizes == [64, 32]  # batches of 32 and 16 images, two views each, one forward per batch


def test_cpu_stages_feed_the_network_default_layout_tensors():
    """channels_last is for CUDA only: a CPU convolution must never see channels_last strides."""
    data = tiny_set()
    seen = []

    def record(module, inputs):
        seen.append(inputs[0].is_contiguous())

    model = build_model("resnet18", 10, width=WIDTH)
    model.backbone.conv1.register_forward_pre_hook(record)
    st.train_head(model, data.images, data.labels, TINY.head, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    st.finetune(model, opt, data.images, data.labels, torch.arange(64) % 4 == 0, TINY.head, TINY.finetune,
                0, warmup_epochs=1)
    assert seen and all(seen)


def test_stages_are_cached_and_reused(tmp_path):
    data_set, spec, cache = tiny_set(), tiny_spec(), ArtifactCache(tmp_path)
    data = run_data(spec, data_set, data_set, cache)
    dbd = get_defense("dbd")
    result = dbd.run(spec, data, TINY, cache)
    record = result.stages["finetune"]
    assert [h["epoch"] for h in record.history] == [2, 3]  # after 1 warm-up (head) epoch
    h = record.history[0]
    assert h["credible"] == 32 and 0 <= h["poisoned_in_credible"] <= h["poisoned_total"] and "ASR" in h
    assert result.suspicion.shape == (64,) and int(result.flagged.sum()) == 32
    files = sorted(p.parent.name for p in tmp_path.rglob("*.pt"))
    assert files == ["dbd_finetune", "dbd_head", "dbd_simclr"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = dbd.run(spec, data, TINY, cache)
    assert mtimes == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}  # nothing rebuilt
    assert torch.equal(again.suspicion, result.suspicion)
    head_stage(spec, data, TINY.with_(head={"loss": "ce"}), cache)  # a new head, the same SimCLR backbone
    assert len(list((tmp_path / "dbd_simclr").glob("*.pt"))) == 1
    assert len(list((tmp_path / "dbd_head").glob("*.pt"))) == 2


def test_finetune_history_is_keyed_by_the_test_set_it_was_evaluated_on(tmp_path):
    """A stage that evaluates while it builds must not serve a history computed on another test set."""
    data_set, spec, cache = tiny_set(), tiny_spec(), ArtifactCache(tmp_path)
    dbd = get_defense("dbd")
    first = dbd.run(spec, run_data(spec, data_set, data_set, cache), TINY, cache)
    other_test = tiny_set(32)
    second = dbd.run(spec, run_data(spec, data_set, other_test, cache), TINY, cache)
    assert len(list((tmp_path / "dbd_finetune").glob("*.pt"))) == 2
    assert first.stages["finetune"].key != second.stages["finetune"].key


def test_ablation_rows_are_configs_and_reuse_stages(tmp_path):
    data_set, spec, cache = tiny_set(), tiny_spec(), ArtifactCache(tmp_path)
    data = run_data(spec, data_set, data_set, cache)
    rows = dbd_ablation(TINY)
    assert list(rows) == ["without SS (supervised backbone)", "SS + CE head", "SS + SCE head",
                          "SS + SCE + supervised tuning on the credible half", "DBD (SS + SCE + MixMatch)"]
    results = {name: get_defense("dbd").run(spec, data, cfg, cache) for name, cfg in rows.items()}
    assert set(results["SS + SCE head"].stages) == {"simclr", "head"}  # stops after the head
    assert set(results["without SS (supervised backbone)"].stages) == {"no_defense", "head", "finetune"}
    assert len(list((tmp_path / "dbd_simclr").glob("*.pt"))) == 1  # one backbone for every SS row
    assert len(list((tmp_path / "no_defense").glob("*.pt"))) == 1
    assert len(list((tmp_path / "dbd_head").glob("*.pt"))) == 3  # SCE, CE, and on the supervised backbone
    simclr_stage(spec, data, TINY.simclr, cache)
    assert len(list((tmp_path / "dbd_simclr").glob("*.pt"))) == 1


def test_config_validation():
    with pytest.raises(ValueError):
        st.FinetuneConfig(credible_fraction=1.0)
    with pytest.raises(ValueError, match="backbone"):
        DBDConfig(backbone="imagenet")
    with pytest.raises(ValueError, match="stop_after"):
        DBDConfig(stop_after="simclr")
    with pytest.raises(ValueError, match="no field"):
        get_defense("dbd").config("smoke", epochs=3)
