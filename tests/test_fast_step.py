"""The GPU step paths, run on the CPU: fused optimizers with a device-tensor learning rate set from a per-epoch
table, MixMatch's λ_u ramp and MixUp λ drawn ahead as device tensors, BatchNorm in fp32 under autocast, and the
compile switch of the supervised, SimCLR and MixMatch steps (equal to the eager step up to float rounding)."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoor_repro import fast_step
from backdoor_repro.defenses.dbd_stages import FinetuneConfig, SelfSupervised, SimCLRConfig, finetune, train_simclr
from backdoor_repro.losses import linear_rampup, mix_coefficient
from backdoor_repro.models import Classifier, build_model
from backdoor_repro.models.norm import BatchNorm1d, BatchNorm2d
from backdoor_repro.train import TrainConfig, epoch_learning_rates, lr_factor, train_model

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def gpu_paths():
    fast_step.enable_gpu_step_paths(True)
    yield
    fast_step.enable_gpu_step_paths(False)


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (40,), generator=gen))


def test_step_values_are_floats_on_the_scalar_path_and_one_device_tensor_on_the_device_path(gpu_paths):
    values = [0.1, 0.05, 1 / 3]
    scalar = fast_step.StepValues(values, torch.device("cpu"), on_device=False)
    assert [scalar[i] for i in range(3)] == values and all(type(scalar[i]) is float for i in range(3))
    device = fast_step.StepValues(values, torch.device("cpu"))  # the switch is on: the device path
    assert device.tensor is not None and device[2].dim() == 0
    assert [device[i].item() for i in range(3)] == [float(np.float32(v)) for v in values]
    assert device[1].data_ptr() == device.tensor.data_ptr() + device.tensor.element_size()  # a view, not a copy


def test_epoch_learning_rates_follow_the_schedule():
    cfg = TrainConfig(epochs=4, lr=0.2, schedule="cosine")
    table = epoch_learning_rates(cfg, 1, 5, torch.device("cpu"))
    assert table.floats == [0.2 * lr_factor(cfg, 1 + s / 5) for s in range(5)]
    assert table.floats[0] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_a_fused_step_uses_the_tables_learning_rate(gpu_paths):
    """p <- p - lr * (g + wd * p) with lr read from the table's device tensor (SGD without momentum)."""
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = fast_step.sgd([p], 0.5, torch.device("cpu"), momentum=0.0, weight_decay=0.1)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) and opt.defaults["fused"]
    table = fast_step.StepValues([0.25, 0.125], torch.device("cpu"))
    for step, lr in enumerate(table.floats):
        fast_step.set_lr(opt, table[step])
        before = p.detach().clone()
        p.grad = torch.tensor([0.5, 1.0])
        opt.step()
        assert torch.allclose(p.detach(), before - lr * (p.grad + 0.1 * before))
    assert fast_step.current_lr(opt) == 0.125


def test_the_device_path_trains_like_the_scalar_path_and_resumes_bit_identically(data, tmp_path, gpu_paths,
                                                                                   monkeypatch):
    images, labels = data
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, schedule="cosine", checkpoint_every=1)

    def run(path=None):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, 4)
        result = train_model(model, images, labels, cfg, checkpoint=path, progress=False)
        return model.state_dict(), result.history

    device_weights, device_history = run()
    fast_step.enable_gpu_step_paths(False)
    scalar_weights, scalar_history = run()
    fast_step.enable_gpu_step_paths(True)
    # the same schedule; fused and unfused SGD round differently, so the weights agree to float precision only
    assert [h["lr"] for h in device_history] == pytest.approx([h["lr"] for h in scalar_history], rel=1e-6)
    for k in scalar_weights:
        assert torch.allclose(device_weights[k].float(), scalar_weights[k].float(), rtol=1e-3, atol=1e-4), k
    # a checkpoint holds the tensor learning rate; resumed, the run ends with the same weights
    from backdoor_repro.deadline import DEADLINE_ENV, TimeBudgetExhausted
    import time
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(TimeBudgetExhausted):
        run(tmp_path / "ckpt.pt")
    monkeypatch.delenv(DEADLINE_ENV)
    resumed, _ = run(tmp_path / "ckpt.pt")
    assert all(torch.equal(resumed[k], device_weights[k]) for k in device_weights)


def test_mixmatch_draws_its_epoch_of_lambdas_in_the_order_the_steps_did():
    rng, again = np.random.default_rng(3), np.random.default_rng(3)
    ahead = [mix_coefficient(0.75, rng) for _ in range(5)]
    one_by_one = []
    for _ in range(5):
        lam = float(again.beta(0.75, 0.75))
        one_by_one.append(max(lam, 1.0 - lam))
    assert ahead == one_by_one and min(ahead) >= 0.5


def _finetune(images, labels, epochs=1):
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4)
    opt = fast_step.adam(model.parameters(), 0.002, torch.device("cpu"))
    cfg = FinetuneConfig(epochs=epochs, iterations=3, batch_size=8, rampup_epochs=4.0)
    history, _, _ = finetune(model, opt, images, labels, torch.arange(len(labels)) % 4 == 0,
                             _head_cfg(), cfg, seed=0, warmup_epochs=1)
    return model.state_dict(), history


def _head_cfg():
    from backdoor_repro.defenses.dbd_stages import HeadConfig
    return HeadConfig(epochs=1, batch_size=8)


def test_mixmatch_on_the_device_path_matches_the_scalar_path(data, gpu_paths):
    images, labels = data
    torch.manual_seed(0)
    start = build_model("resnet18", 10, 4).state_dict()
    device_weights, device_history = _finetune(images, labels)
    fast_step.enable_gpu_step_paths(False)
    scalar_weights, scalar_history = _finetune(images, labels)
    assert device_history[0]["lx"] == pytest.approx(scalar_history[0]["lx"], rel=1e-4)
    assert device_history[0]["lu"] == pytest.approx(scalar_history[0]["lu"], rel=1e-3, abs=1e-6)
    # fused Adam rounds differently; Adam's normalised steps magnify that on near-zero gradients, so the check
    # is on the whole update: the same direction and size to within 1 %
    for k, w in scalar_weights.items():
        if w.is_floating_point():
            ours, theirs = (device_weights[k] - start[k]).flatten(), (w - start[k]).flatten()
            assert (ours - theirs).norm() <= 0.01 * theirs.norm() + 1e-7, k


def test_the_lambda_u_weight_is_the_ramp_of_the_official_code():
    """DBD: Lx + 15 · clip(t / 190, 0, 1) · Lu with t = epoch + it / iterations (global epochs, warm-up counted)."""
    cfg = FinetuneConfig()
    assert cfg.lambda_u * linear_rampup(10 + 512 / 1024, cfg.rampup_epochs) == pytest.approx(15 * 10.5 / 190)
    assert cfg.lambda_u * linear_rampup(250, cfg.rampup_epochs) == 15


@pytest.mark.parametrize("layer, shape", [(BatchNorm2d, (6, 4, 5, 5)), (BatchNorm1d, (6, 4))])
def test_batchnorm_normalises_in_fp32_under_autocast_and_is_plain_batchnorm_otherwise(layer, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    ours, plain = layer(4), getattr(nn, layer.__name__)(4)
    plain.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x), plain(x))  # fp32 input: nn.BatchNorm exactly
    assert torch.equal(ours.running_mean, plain.running_mean)
    low = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(low)
    assert out.dtype == torch.float32
    assert torch.equal(out, plain(low.float()))  # the bf16 input normalised in fp32
    assert torch.equal(ours.running_var, plain.running_var) and ours.running_var.dtype == torch.float32


def test_every_model_normalises_in_fp32_under_autocast():
    for name in ("resnet18", "resnet18_maxpool", "preact_resnet18", "wrn16"):
        model = build_model(name, 10, 4)
        dtypes = []
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert isinstance(m, (BatchNorm1d, BatchNorm2d)), (name, type(m))
                m.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.rand(2, 3, 32, 32))
        assert dtypes and set(dtypes) == {torch.float32}, name


class Tiny(nn.Module):
    """A small backbone (conv, BN, ReLU, pool) for the compile tests: compiles in seconds on a CPU."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNorm2d(8)
        self.out_features = 8

    def forward(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1), 1)


def _close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4) for k in a)


def test_compiled_steps_match_the_eager_steps(data):
    """The compile switch of the supervised loop, SimCLR and MixMatch (inductor's kernels round differently)."""
    images, labels = data

    def supervised(compile_):
        torch.manual_seed(0)
        model = Classifier(Tiny(), 10)
        train_model(model, images, labels, TrainConfig(epochs=1, batch_size=8, lr=0.05, compile=compile_),
                         progress=False)
        return model.state_dict()

    def simclr(compile_):
        torch.manual_seed(0)
        model = SelfSupervised(Tiny(), nn.Identity(), 16)
        history = train_simclr(model, images, SimCLRConfig(epochs=1, batch_size=16, compile=compile_), seed=0)
        return model.state_dict(), history[0]["simclr_loss"]

    def mixmatch(compile_):
        torch.manual_seed(0)
        model = Classifier(Tiny(), 10)
        opt = torch.optim.Adam(model.parameters(), lr=0.002)
        cfg = FinetuneConfig(epochs=1, iterations=2, batch_size=8, compile=compile_)
        history, _, _ = finetune(model, opt, images, labels, torch.arange(len(labels)) % 4 == 0,
                                 _head_cfg(), cfg, seed=0, warmup_epochs=1)
        return model.state_dict(), history[0]["lx"]

    torch._dynamo.reset()
    assert _close(supervised(True), supervised(False))
    (compiled, loss), (eager, eager_loss) = simclr(True), simclr(False)
    assert _close(compiled, eager) and loss == pytest.approx(eager_loss, rel=1e-4)
    (compiled, lx), (eager, eager_lx) = mixmatch(True), mixmatch(False)
    assert _close(compiled, eager) and lx == pytest.approx(eager_lx, rel=1e-4)


def test_the_compile_switch_of_each_stage_compiles_its_step_model():
    """Without this, the compiled-vs-eager check above would pass for a switch that does nothing."""
    from backdoor_repro.train import prepare_model
    for cfg in (TrainConfig(compile=True), SimCLRConfig(compile=True), FinetuneConfig(compile=True)):
        model, step_model = prepare_model(Classifier(Tiny(), 10), torch.device("cpu"), cfg)
        assert isinstance(step_model, torch._dynamo.eval_frame.OptimizedModule) and step_model._orig_mod is model
    for cfg in (TrainConfig(), SimCLRConfig(), FinetuneConfig()):
        model, step_model = prepare_model(Classifier(Tiny(), 10), torch.device("cpu"), cfg)
        assert step_model is model


def test_the_paper_profile_trains_in_fp32_on_the_gpu_and_keys_it_apart():
    """bf16 autocast is for smoke / fast; paper turns it off on CUDA (as the official code). The precision is a field
    of the spec (resolve.precision_for), so bf16 and fp32 models are never mixed, and running a spec sets it."""
    from backdoor_repro.profiles import get_profile
    from backdoor_repro.resolve import precision_for
    from backdoor_repro.train import bf16_on, cpu_autocast, enable_cpu_autocast, gpu_bf16, set_gpu_bf16
    assert not get_profile("paper").bf16 and get_profile("fast").bf16 and get_profile("smoke").bf16
    assert precision_for(get_profile("paper"), "cuda", None) == "fp32"
    assert precision_for(get_profile("fast"), "cuda", None) == precision_for(get_profile("smoke"), "cuda", None) == "bf16"
    assert precision_for(get_profile("smoke"), "cpu", None) == "fp32"  # the smoke keys: fp32 on the CPU
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert precision_for(get_profile("fast"), "cpu", "dry_run") == ("bf16" if native else "fp32")
    assert precision_for(get_profile("paper"), "cpu", "dry_run") == "fp32"
    before, before_cpu = gpu_bf16(), cpu_autocast()
    try:
        set_gpu_bf16(True)
        assert bf16_on(torch.device("cuda"))
        set_gpu_bf16(False)
        assert not bf16_on(torch.device("cuda"))
    finally:
        set_gpu_bf16(before)
        enable_cpu_autocast(before_cpu)


def test_compiling_keeps_the_kernel_cache_of_other_cpu_caps_apart(monkeypatch):
    """Inductor's cache key leaves out the CPU kernel caps: kernels cached without them and loaded with them gave NaN
    weights here (torch 2.14.1), so a compiled stage points the cache at a folder named after the caps in force,
    unless the user set one."""
    from backdoor_repro import numerics
    from backdoor_repro.train import prepare_model
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    prepare_model(Classifier(Tiny(), 10), torch.device("cpu"), TrainConfig(compile=True))
    chosen = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert chosen == numerics.inductor_cache_dir(numerics.active_caps()) and "ATEN_CPU_CAPABILITY_avx2" in chosen
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert numerics.inductor_cache_dir(numerics.active_caps()) != chosen
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/mine")
    prepare_model(Classifier(Tiny(), 10), torch.device("cpu"), TrainConfig(compile=True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/mine"


def test_a_loaded_optimizer_state_puts_a_tensor_lr_on_the_parameters_device():
    """A cached optimizer state comes back on the CPU; torch moves the per-parameter state but not a group's tensor
    lr, which a fused CUDA step then rejects. The meta device stands in for CUDA."""
    import copy
    params = [nn.Parameter(torch.zeros(2, device="meta"))]
    opt = torch.optim.SGD(params, lr=0.1)
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][0]["lr"] = torch.tensor(0.05)
    fast_step.load_optimizer_state(opt, state)
    lr = opt.param_groups[0]["lr"]
    assert lr.device.type == "meta" and lr.shape == ()
