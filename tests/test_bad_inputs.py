"""Values that are accepted but meaningless are clear errors naming the parameter, before any compute. One row per
case: adding a case is one line."""
import math

import pytest

from backdoor_repro.attacks import get_attack
from backdoor_repro.orchestration.grid import make_cells
from backdoor_repro.spec import Holdout
from backdoor_repro.train import TrainConfig

CASES = [
    # (what, call, message the error must contain)
    ("NaN lr", lambda: TrainConfig(lr=math.nan), "lr must be a finite number"),
    ("infinite lr", lambda: TrainConfig(lr=math.inf), "lr must be a finite number"),
    ("negative lr", lambda: TrainConfig(lr=-0.1), "lr must be"),
    ("lr as a string", lambda: TrainConfig(lr="0.1"), "lr must be"),
    ("fractional epochs", lambda: TrainConfig(epochs=2.5), "epochs must be an integer"),
    ("boolean epochs", lambda: TrainConfig(epochs=True), "epochs must be an integer"),
    ("zero batch size", lambda: TrainConfig(batch_size=0), "batch_size must be an integer >= 1"),
    ("negative momentum", lambda: TrainConfig(momentum=-0.9), "momentum must be"),
    ("momentum above 1", lambda: TrainConfig(momentum=1.5), "momentum must be"),
    ("negative weight decay", lambda: TrainConfig(weight_decay=-5e-4), "weight_decay must be"),
    ("zero gamma", lambda: TrainConfig(gamma=0), "gamma must be"),
    ("fractional milestone", lambda: TrainConfig(milestones=(100.5,)), "milestones must be an integer"),
    ("zero checkpoint interval", lambda: TrainConfig(checkpoint_every=0), "checkpoint_every must be"),
    ("negative seed", lambda: TrainConfig(seed=-1), "seed must be"),
    ("unknown schedule", lambda: TrainConfig(schedule="linear"), "unknown schedule"),
    ("fractional target", lambda: get_attack("grid3", target=1.5), "target must be an integer"),
    ("rate as a string", lambda: get_attack("grid3", rate="0.1"), "rate must be a number"),
    ("zero rate", lambda: get_attack("grid3", rate=0), "rate must be a number"),
    ("rate above 1", lambda: get_attack("grid3", rate=1.5), "rate must be a number"),
    ("blend alpha above 1", lambda: get_attack("blend_kitty_dbd", alpha=1.5), "alpha"),
    ("blend alpha below 0", lambda: get_attack("blend_kitty_dbd", alpha=-0.1), "alpha"),
    ("unknown attack parameter", lambda: get_attack("grid3", colour=1), "colour"),
    ("holdout fraction 1.5", lambda: Holdout(1.5), "holdout fraction"),
    ("unknown holdout rule", lambda: Holdout(0.1, "random"), "unknown holdout rule"),
    ("unknown grid protocol", lambda: make_cells(["none"], ["grid3"], protocols=["mine"]), "unknown protocol"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
