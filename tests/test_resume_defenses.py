"""Every registered defense resumes mid-stage: each of its checkpointing stages is stopped once at its first
checkpoint (as a ``--max-minutes`` deadline or a kill right after that checkpoint leaves it) and the defense is
rerun until it finishes; its model and every stage's history equal an uninterrupted run's. Registering a defense
puts it under this test: its small-run config with two epochs in each stage that counts epochs
(``defense_fixtures.with_epochs``; ANP's two iterations checkpoint every iteration here)."""
from dataclasses import replace

import pytest
import torch

from backdoor_repro import resume
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import DEFENSES, anp, fmp_rank, get_defense
from backdoor_repro.deadline import TimeBudgetExhausted
from backdoor_repro.resume import EpochCheckpoint
from defense_fixtures import tiny_data, tiny_spec, with_epochs

@pytest.fixture
def stop_once_at_each_checkpoint(monkeypatch):
    """Checkpoints every epoch; the first checkpoint of each checkpoint file raises TimeBudgetExhausted."""
    stopped = []
    original_init = EpochCheckpoint.__init__

    def every_epoch(self, path, config_key, every, epochs, device, data=None):
        original_init(self, path, config_key, 1, epochs, device, data)

    def stop_once(where):
        if "(" in where:  # a checkpoint's, naming its file; not the start of an artifact
            name = where.rsplit("(", 1)[1].rstrip(")")
            if name not in stopped:
                stopped.append(name)
                raise TimeBudgetExhausted(f"test deadline at {where}")

    monkeypatch.setattr(EpochCheckpoint, "__init__", every_epoch)
    monkeypatch.setattr(anp, "ANP_CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(resume, "check_time_budget", stop_once)
    monkeypatch.setattr(fmp_rank, "check_time_budget", stop_once)
    return stopped


def same(a, b) -> bool:
    """Equal to the bit: tensors by ``torch.equal``, containers item by item, anything else by ``==``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def untimed(extras: dict) -> dict:
    """A stage's extras (e.g. ANP's masks, FCT's scores and flags) without its timings."""
    return {k: v for k, v in extras.items() if "seconds" not in k and "per_second" not in k}


def _two_epoch_spec(defense, tiny):
    spec = tiny_spec(defense, tiny)
    return replace(spec, no_defense_schedule=spec.no_defense_schedule.with_(epochs=2))


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(DEFENSES))
def test_each_stage_stopped_at_a_checkpoint_resumes_to_the_uninterrupted_result(key, tiny, tmp_path,
                                                                                 stop_once_at_each_checkpoint):
    d = get_defense(key)
    spec = _two_epoch_spec(d, tiny)
    cfg = with_epochs(d.small_config("smoke"), 2)
    data = tiny_data(spec, tiny, ArtifactCache(tmp_path / "data"))

    stops = 0
    while True:  # the sliced run: rerun the same command until it finishes
        try:
            resumed = d.run(spec, data, cfg, ArtifactCache(tmp_path / "sliced"))
            break
        except TimeBudgetExhausted:
            stops += 1
            assert stops <= 12, "no progress between slices"
    assert stops == len(stop_once_at_each_checkpoint) and stops >= 1

    with pytest.MonkeyPatch.context() as m:  # the uninterrupted run: no deadline at all
        m.setattr(resume, "check_time_budget", lambda where: None)
        m.setattr(fmp_rank, "check_time_budget", lambda where: None)
        whole = d.run(spec, data, cfg, ArtifactCache(tmp_path / "whole"))

    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"{key}: {name} differs after resuming"
    assert whole.stages.keys() == resumed.stages.keys()
    for name, record in whole.stages.items():
        assert record.history == resumed.stages[name].history, f"{key}: the {name} history differs"
        assert same(untimed(record.extras), untimed(resumed.stages[name].extras)), f"{key}: the {name} extras differ"
    # every stage was stopped once and resumed (its partial file was named at a stop)
    checkpointed = {name for name, r in resumed.stages.items() if f"{r.key}.partial.pt" in stop_once_at_each_checkpoint}
    assert checkpointed == set(resumed.stages), (key, checkpointed)
