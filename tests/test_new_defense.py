"""Adding a defense takes one module (its configs, deviations, protocol record, small-run overrides and stages) and
the line that imports it: this test writes such a module outside the package, imports it, and runs the new defense
through everything that loops over the registry (resolve, the experiment, the grid, the contract's checks), then
takes it out of the registry again. No other file of the repository names it."""
import importlib.util
import sys
import textwrap

import pytest

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import DEFENSES, get_defense
from backdoor_repro.experiment import setup
from defense_fixtures import tiny_data, tiny_spec

MODULE = textwrap.dedent('''
    """Head reset: the No-Defense model's classifier head re-initialised and trained on the clean holdout."""
    from dataclasses import dataclass

    import torch

    from backdoor_repro.defenses.base import PROFILE_NAMES, Defense, DefenseResult, register_defense
    from backdoor_repro.graph import Stage
    from backdoor_repro.pipeline import no_defense_model
    from backdoor_repro.readers import effect
    from backdoor_repro.records import Check, ProtocolRecord
    from backdoor_repro.spec import Holdout
    from backdoor_repro.stages import StageOutput, cached_stage
    from backdoor_repro.train import HeadOnlyObjective, TrainConfig, train_model


    @dataclass(frozen=True)
    class HeadResetConfig:
        head: TrainConfig = TrainConfig(epochs=5, batch_size=64, lr=0.05, schedule="cosine", augmentation="none")


    RECORD = ProtocolRecord(notebook="head_reset", attacks={"*": ("grid3",)},
                            checks={"smoke": (Check("grid3: ASR - CTR after head reset", "<=", 100,
                                                    effect("head_reset_t1", "grid3", "head_reset"), ("grid3",)),)})


    class HeadReset(Defense):
        key, paper, title = "head_reset", "example", "re-initialise the head, train it on the clean holdout"
        needs = frozenset({"clean_holdout", "backdoored_model"})
        holdout = Holdout(0.1, "clean_subset")
        configs = {p: HeadResetConfig() for p in PROFILE_NAMES}
        deviations = {p: ("an example defense: no paper",) for p in PROFILE_NAMES}
        small_run = {"head": {"epochs": 1}}
        record = RECORD

        def defend(self, spec, data, cfg, cache, progress):
            stage = Stage("head_reset", cfg, 1, (spec.no_defense_stage(), spec.granted_stage()))

            def build(partial):
                model, _ = no_defense_model(spec, None, cache, progress, data=data)
                torch.manual_seed(spec.seed)
                model.head.reset_parameters()
                holdout = data.clean_holdout
                result = train_model(model, holdout.images, holdout.labels, cfg.head.with_(seed=spec.seed),
                                     checkpoint=partial, progress=progress, objective=HeadOnlyObjective())
                return StageOutput(model, result.history)

            model, record = cached_stage(cache, stage, build, spec.new_model, data.train.images.device)
            return DefenseResult(model, {"head_reset": record})


    register_defense(HeadReset())
''')


@pytest.fixture
def head_reset(tmp_path):
    path = tmp_path / "head_reset.py"
    path.write_text(MODULE)
    spec = importlib.util.spec_from_file_location("head_reset", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["head_reset"] = module
    spec.loader.exec_module(module)  # registers it: the "registry line"
    try:
        yield get_defense("head_reset")
    finally:
        DEFENSES.pop("head_reset", None)
        sys.modules.pop("head_reset", None)


@pytest.mark.slow
def test_a_defense_in_one_module_runs_everywhere_the_registry_reaches(head_reset, tiny, tmp_path):
    from backdoor_repro.orchestration import grid
    # the contract: a defended model, stage records, cached
    spec = tiny_spec(head_reset, tiny)
    cache = ArtifactCache(tmp_path / "contract")
    result = head_reset.run(spec, tiny_data(spec, tiny, cache), head_reset.small_config("smoke"), cache)
    assert set(result.stages) == {"head_reset"} and result.stages["head_reset"].history
    # resolve: its threat model's holdout, in its own protocol and in the common one
    ex = setup("smoke", device="cpu", quiet=True)
    assert ex.spec("grid3", defense="head_reset").holdout == head_reset.holdout
    assert ex.spec("grid3", "head_reset", protocol="common").no_defense_stage() == ex.spec("grid3").no_defense_stage()
    # the grid: a plumbing cell under both protocols
    cells = grid.make_cells(["head_reset"], ["grid3"], protocols=("common", "own"))
    settings = grid.GridSettings("smoke", device="cpu", plumbing=True, cache_root=str(tmp_path / "grid-cache"))
    report = grid.run_grid(cells, settings, tmp_path / "grid", "inline", log=lambda *_: None)
    assert not report.failed and len(report.ran) == 2
    # its record: the notebook's attacks and checks
    assert head_reset.record.attacks_for("smoke", "cifar10-smoke") == ("grid3",)
    assert head_reset.record.checks["smoke"][0].attacks == ("grid3",)
