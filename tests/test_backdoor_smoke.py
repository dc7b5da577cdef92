"""On the smoke profile's real data, BadNets really implants a backdoor while clean accuracy stays
well above chance (10 %). Trains one width-8 ResNet-18 (about a minute on 2 CPU cores); the artifact
is shared with the attacks notebook re-executed later in the session."""
import pytest

from backdoor_repro import get_profile
from backdoor_repro.pipeline import ModelSpec, load_data, supervised_model


@pytest.mark.slow
def test_badnets_backdoors_the_smoke_model():
    profile = get_profile("smoke")
    train, test = load_data(profile)
    spec = ModelSpec.for_profile(profile, train, "badnets_dbd_2x2", data_seed=0, seed=0)
    _, record = supervised_model(spec, train, test, progress=False)
    m = record["metrics"]
    assert record["poison_count"] == 469
    assert m["ASR"] >= 70, m  # triggered non-target images go to the target class...
    assert m["CTR"] <= 30, m  # ...far more often than clean ones do
    assert m["ACC"] >= 40, m
