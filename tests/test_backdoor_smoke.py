"""On the smoke profile's real data, BadNets really implants a backdoor while clean accuracy stays
well above chance (10 %). Trains one width-8 ResNet-18 (about a minute on 2 CPU cores) through the
`none` defense; the artifact is shared with the attacks notebook re-executed later in the session."""
import pytest

from backdoor_repro.experiment import setup


@pytest.mark.slow
def test_badnets_backdoors_the_smoke_model():
    ex = setup("smoke", quiet=True)
    spec = ex.spec("badnets_dbd_2x2")
    result = ex.run("none", spec)
    m = ex.evaluate(result.model, spec)
    assert result.stages["no_defense"].extras["poison_count"] == 469
    assert m["ASR"] >= 70, m  # triggered non-target images go to the target class...
    assert m["CTR"] <= 30, m  # ...far more often than clean ones do
    assert m["ACC"] >= 40, m
