"""Metric definitions on hand-made cases (values in percent)."""
import pytest
import torch

from backdoor_repro import metrics
from backdoor_repro.attacks import get_attack
from backdoor_repro.data import ImageSet
from backdoor_repro.evaluation import AttackEvaluator

t = torch.tensor


def test_accuracy_and_without_class():
    pred, labels = t([0, 1, 2, 2, 0]), t([0, 1, 1, 2, 3])
    assert metrics.accuracy(pred, labels) == pytest.approx(60.0)
    assert metrics.accuracy_without_class(pred, labels, excluded=1) == pytest.approx(200 / 3)  # indices 0, 3 right; 4 wrong


def test_asr_ra_ctr():
    pred_triggered, true = t([3, 3, 1, 2]), t([0, 1, 1, 2])
    assert metrics.attack_success_rate(pred_triggered, t([3, 3, 3, 3])) == 50.0
    assert metrics.robust_accuracy(pred_triggered, true) == 50.0
    # clean predictions over labels [3, 0, 1, 2, 3]: non-target are indices 1..3; one of them predicted 3
    assert metrics.clean_to_target_rate(t([3, 3, 1, 0, 3]), t([3, 0, 1, 2, 3]), target=3) == pytest.approx(100 / 3)


def test_der_hand_computed():
    # ASR 100 -> 2 (drop 98), ACC 92 -> 90 (drop 2): (98 - 2 + 100) / 2 = 98
    assert metrics.defense_effectiveness_rating(92, 100, 90, 2) == 98.0
    # a defense that raises ACC and ASR: both clipped at 0 -> 50
    assert metrics.defense_effectiveness_rating(80, 10, 85, 20) == 50.0


def test_empty_population_is_an_error():
    with pytest.raises(ValueError):
        metrics.accuracy(t([], dtype=torch.long), t([], dtype=torch.long))


class Constant(torch.nn.Module):
    """Predicts ``cls`` for every image, ``trigger_cls`` for images whose pixel (4, 4) is red 180."""

    def __init__(self, cls, trigger_cls):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cls, self.trigger_cls = cls, trigger_cls

    def forward(self, x):
        triggered = (x[:, 0, 4, 4] * 255).round() == 180
        out = torch.zeros(x.shape[0], 10) + self.w
        out[torch.arange(x.shape[0]), torch.where(triggered, self.trigger_cls, self.cls)] = 1
        return out


def test_evaluator_on_a_perfect_backdoor():
    labels = torch.arange(10).repeat(2)
    test = ImageSet(torch.full((20, 3, 32, 32), 50, dtype=torch.uint8), labels, tuple(map(str, range(10))), "toy")
    scores = AttackEvaluator(get_attack("badnets_dbd_2x2"), test)(Constant(cls=1, trigger_cls=3))
    assert scores["ASR"] == 100.0  # every triggered non-target image -> 3
    assert scores["ACC"] == 10.0  # only class-1 images right
    assert scores["CTR"] == 0.0 and scores["RA"] == pytest.approx(0.0)
    assert scores["ACC_no_target"] == pytest.approx(100 / 9)


def test_auroc_hand_cases():
    pos = t([True, True, False, False])
    assert metrics.auroc(t([0.9, 0.8, 0.1, 0.2]), pos) == 100.0
    assert metrics.auroc(t([0.1, 0.2, 0.9, 0.8]), pos) == 0.0
    # positives 0.5, 0.3; negatives 0.4, 0.3: pairs (0.5>0.4), (0.5>0.3), (0.3<0.4), (0.3=0.3 -> 1/2) = 2.5/4
    assert metrics.auroc(t([0.5, 0.3, 0.4, 0.3]), pos) == pytest.approx(62.5)
    with pytest.raises(ValueError):
        metrics.auroc(t([0.1, 0.2]), t([True, True]))


def test_detection_rates():
    rates = metrics.detection_rates(t([1, 1, 0, 1, 0]), t([1, 1, 1, 0, 0]))
    assert rates["TPR"] == pytest.approx(200 / 3) and rates["FPR"] == pytest.approx(50.0)
