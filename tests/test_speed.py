"""Fast paths (missingu.speed) compute the same function; the fixed-step ODE solver equals
torchdiffeq's to the bit; `missingu bench` writes its rows and says what it could not run.
(Speed itself is a benchmark, never asserted here.)"""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from torchdiffeq import odeint

from missingu.batches import BatchSource, draw_batch, step_generator
from missingu.bench import BenchConfig, peak_flops, reference_unet
from missingu.cli import main
from missingu.config import ConfigError
from missingu.diffusion import Diffusion
from missingu.models import ARCHITECTURES, UNetConfig, build_model
from missingu.models.ode_block import EVALS_PER_STEP, fixed_grid, fixed_step_solve
from missingu.speed import FastDenoiser, SpeedConfig, compile_module, use_sdpa
from missingu.train import TrainConfig, train

CPU = torch.device("cpu")


def _tiny(arch: str, channels: int = 1, size: int = 8, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    entry = ARCHITECTURES[arch]
    model = build_model(arch, entry.config_cls(**{**entry.presets["tiny"], **options}), channels, size)
    with torch.no_grad():  # the cU-Net's last convs start at zero: make every layer matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


class _Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(6, 6) * 0.7

    def forward(self, s, z):
        return torch.tanh(z @ self.w) - 0.3 * z


@pytest.mark.parametrize("method", sorted(EVALS_PER_STEP))
@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_fixed_step_solver_equals_torchdiffeq_bit_for_bit(method, steps):
    torch.manual_seed(steps)
    field, z0 = _Field(), torch.randn(4, 6)
    expected = odeint(field, z0, torch.linspace(0.0, 1.0, steps + 1), method=method)[-1]
    assert torch.equal(fixed_step_solve(field, z0, method, fixed_grid(steps)), expected)
    # negative control: one step more is a different (if close) answer
    assert not torch.equal(fixed_step_solve(field, z0, method, fixed_grid(steps + 1)), expected)


def test_speed_variant_names_round_trip_and_bad_names_are_refused():
    assert SpeedConfig.parse("eager") == SpeedConfig()
    both = SpeedConfig.parse("autocast+cuda_graphs")
    assert both.autocast and both.cuda_graphs and not both.compile
    assert SpeedConfig.parse(both.name) == both
    with pytest.raises(ConfigError, match=r"unknown switch 'turbo'; allowed: eager, or switches joined by '\+' "
                                          r"from autocast, channels_last, compile"):
        SpeedConfig.parse("autocast+turbo")
    with pytest.raises(ConfigError, match="bench.parts: unknown 'speed'; allowed: train, call, sample"):
        BenchConfig(parts=("speed",))


def test_cuda_only_switches_are_off_on_the_cpu_with_a_warning(caplog):
    speed = SpeedConfig(autocast=True, cuda_graphs=True, channels_last=True)
    with caplog.at_level(logging.WARNING):
        on_cpu = speed.on(CPU)
    assert on_cpu == SpeedConfig(channels_last=True)
    assert "autocast, cuda_graphs need a CUDA device; off on cpu" in caplog.text
    assert speed.unavailable(CPU) == ["autocast", "cuda_graphs"]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_sdpa_and_channels_last_compute_the_same_function(arch):
    model = _tiny(arch)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 20, 45])
    with torch.no_grad():
        plain = model(x, t)
    fast = FastDenoiser(model, SpeedConfig(sdpa=True, channels_last=True), CPU)
    out = fast(x, t)
    assert out.shape == plain.shape
    assert (out - plain).abs().max().item() < 1e-5 * max(1.0, plain.abs().max().item())
    use_sdpa(model, False)  # back on the explicit path: the FLOP counter's
    assert not any(getattr(m, "sdpa", False) for m in model.modules())


def test_batches_drawn_the_plain_way_on_the_cpu():
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    d = Diffusion()
    source = BatchSource(images, d, 6, True, CPU, on_device=True)  # on_device needs CUDA: plain here
    for k in range(3):
        got, want = source(step_generator(2, k)), draw_batch(images, d, 6, True, step_generator(2, k))
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_training_with_fast_paths_matches_plain_training(tmp_path):
    """channels_last, fused AdamW and the attention kernel change how, not what: after a few steps
    the weights agree with a plain run to float rounding."""
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    config = TrainConfig(steps=3, batch_size=8, checkpoint_every=3, log_every=1)
    states = []
    for name, speed in (("plain", SpeedConfig()), ("fast", SpeedConfig(channels_last=True, fused_adamw=True,
                                                                           sdpa=True))):
        model = _tiny("unet")
        train(model, Diffusion(), images, config, tmp_path / name, progress=False, speed=speed)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    worst = max((states[0][k] - states[1][k]).abs().max().item() for k in states[0])
    assert 0 <= worst < 1e-4


def _step_and_call(model, net, d: Diffusion, x0, t, noise):
    """One loss and backward through ``net`` (``model`` or a compiled form of it): the loss,
    ``model``'s gradients, and ``net``'s output."""
    model.zero_grad(set_to_none=True)
    loss = d.loss(net, x0, t, noise)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.detach(), grads, net(x0, t).detach()


def _assert_like_eager(eager, compiled, what: str = "") -> None:
    """A compiled step and call (:func:`_step_and_call`) give the eager loss, gradients and output."""
    (loss_e, grad_e, out_e), (loss_c, grad_c, out_c) = eager, compiled
    assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=1e-7), what
    assert ((grad_c - grad_e).norm() / grad_e.norm()).item() < 1e-4, what
    assert (out_c - out_e).abs().max().item() < 1e-5, what


def test_compiled_models_train_and_predict_like_eager():
    """torch.compile of both models (TorchDynamo's graph capture and AOTAutograd's compiled
    backward, the parts our model code decides; backend ``aot_eager``): one training step gives the
    eager loss and gradients, and the compiled forward the eager output. Inductor's code
    generation is not run here: on the CPU it is C++ compilation, 100 s cold on 2 cores (430 s
    beside the other tests) for a path nobody trains on; its Triton kernels are what the GPU
    benchmark's compiled variants time."""
    d = Diffusion()
    # one Euler step per ODE block: the compiled graph (and its compile time) stays small
    for arch, options in (("unet", {}), ("cunet", {"solver": "euler", "solver_steps": 1})):
        model = _tiny(arch, **options).train()
        x0, noise = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
        t = torch.tensor([3, 40])
        eager = _step_and_call(model, model, d, x0, t, noise)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=arch == "unet")
        _assert_like_eager(eager, _step_and_call(model, compiled, d, x0, t, noise), arch)


def test_compiling_the_ode_functions_alone_keeps_the_cunet_and_its_state_dict():
    """``speed.compile_ode`` compiles each ODE block's function in place (backend ``aot_eager``
    here, as above): the same loss, gradients and outputs as eager, the same state-dict names, and
    nothing compiled in a network without ODE blocks."""
    from missingu.speed import compile_ode_functions

    d = Diffusion()
    x0, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    model = _tiny("cunet", solver="euler", solver_steps=2).train()
    names = list(model.state_dict())
    eager = _step_and_call(model, model, d, x0, t, noise)
    blocks = sum(type(m).__name__ == "ODEBlock" for m in model.modules())
    assert compile_ode_functions(model, backend="aot_eager") == blocks >= 2  # one per block
    _assert_like_eager(eager, _step_and_call(model, model, d, x0, t, noise))
    assert list(model.state_dict()) == names
    assert all(m._compiled_call_impl is not None for m in model.modules() if type(m).__name__ == "ODEFunc")
    assert compile_ode_functions(_tiny("unet"), backend="aot_eager") == 0
    assert SpeedConfig.parse("compile_ode+channels_last").compile_ode


def test_compile_module_is_torch_compile_without_mix_order_reductions():
    import torch._inductor.config as inductor

    model = _tiny("unet")
    compiled = compile_module(model)
    assert compiled._orig_mod is model and compiled is not model
    assert getattr(getattr(inductor, "triton", None), "mix_order_reduction", False) is False


def test_peak_flops_names_its_source():
    assert peak_flops(CPU) == (None, "unknown for cpu (give --peak-tflops)")
    assert peak_flops(CPU, 100.0) == (1e14, "given (--peak-tflops)")


def test_reference_unet_only_where_it_has_the_same_layout():
    ref, why = reference_unet(UNetConfig(), 3)
    assert ref is not None and why == ""
    ref, why = reference_unet(UNetConfig(dim=16, dim_mults=(1, 2, 4), attention=("none", "none", "full")), 1)
    assert ref is None and "linear or full attention at every level" in why


def test_bench_command_writes_rows_and_says_what_it_did_not_run(tmp_path, tiny_config_file):
    out = tmp_path / "bench.csv"
    assert main(["bench", "--config", str(tiny_config_file), "--out", str(out), "--variants",
                 "eager,channels_last,autocast+cuda_graphs", "--set", "bench.rounds=1",
                 "--set", "bench.train_steps=1", "--set", "bench.call_repeats=2", "--threads", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    models = {r["model"] for r in rows}
    assert {"unet", "cunet"} <= models
    ok = [r for r in rows if r["status"] == "ok"]
    for variant in ("eager", "channels_last"):
        for model in ("unet", "cunet"):
            parts = {(r["part"], r["batch"]) for r in ok if r["model"] == model and r["variant"] == variant}
            assert parts == {("train", "32"), ("call", "1"), ("call", "16"), ("sample", "1")}
    train_rows = [r for r in ok if r["part"] == "train"]
    assert all(float(r["images_per_s"]) > 0 and int(r["flops_per_image"]) > 0 for r in train_rows)
    assert all(r["mfu"] == "" and r["peak_source"] == "unknown for cpu (give --peak-tflops)" for r in train_rows)
    assert all(int(r["kernel_ops_per_call"]) > 10 for r in ok if r["part"] == "call")
    skipped = [r for r in rows if r["variant"] == "autocast+cuda_graphs"]
    assert skipped and all(r["status"] == "not run: autocast, cuda_graphs need a CUDA device; this is cpu"
                           for r in skipped)
    assert all(r["device_name"] for r in rows)


def test_operators_are_classed_by_name():
    from missingu.ops import op_class

    expected = {
        "aten::convolution_backward": "convolution", "aten::mkldnn_convolution": "convolution",
        "aten::cudnn_convolution": "convolution", "aten::native_group_norm": "normalization",
        "aten::silu_backward": "activation", "aten::softplus": "activation",
        "aten::_scaled_dot_product_flash_attention": "attention", "aten::addmm": "attention", "aten::bmm": "attention",
        "Optimizer.step#AdamW.step": "optimizer", "aten::_foreach_lerp_": "optimizer",
        "aten::copy_": "memory", "aten::cat": "memory", "aten::upsample_nearest2d": "memory",
        "aten::add_": "elementwise", "aten::randn": "elementwise",
        "SiluBackward0": "autograd", "autograd::engine::evaluate_function: AddBackward0": "autograd",
        "aten::_nnpack_available": "other",
    }
    assert {name: op_class(name) for name in expected} == expected


def test_op_breakdown_splits_a_training_step_into_its_operators():
    from missingu.ops import CLASSES, class_totals, op_breakdown

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(),
                                torch.nn.Conv2d(8, 3, 3, padding=1))
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(4, 3, 16, 16)

    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    rows = op_breakdown(step, torch.device("cpu"), repeats=2)
    assert rows and all(r["self_ms"] > 0 for r in rows)
    assert [r["self_ms"] for r in rows] == sorted((r["self_ms"] for r in rows), reverse=True)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    convs = {r["op"]: r["calls"] for r in rows if r["op_class"] == "convolution"}
    assert convs["aten::convolution_backward"] == 2  # per step: two layers, averaged over the two repeats
    totals = class_totals(rows)
    assert set(totals) == {f"{c}_ms" for c in CLASSES} | {"total_ms"}
    assert totals["total_ms"] == pytest.approx(sum(r["self_ms"] for r in rows))
    assert all(totals[f"{c}_ms"] > 0 for c in ("convolution", "normalization", "activation", "optimizer"))
    assert totals["attention_ms"] == 0  # no matrix product in this network


def test_bench_part_ops_writes_class_totals_and_each_operator(tmp_path, tiny_config_file):
    out = tmp_path / "bench.csv"
    assert main(["bench", "--config", str(tiny_config_file), "--out", str(out), "--parts", "ops", "--variants",
                 "eager", "--models", "unet", "--set", "bench.train_steps=1", "--set", "bench.call_repeats=1",
                 "--threads", "1"]) == 0
    rows = [r for r in csv.DictReader(out.open()) if r["status"] == "ok"]
    assert {(r["model"], r["part"]) for r in rows} == {("unet", "ops_call"), ("unet", "ops_train")}
    assert all(float(r["total_ms"]) > 0 and float(r["convolution_ms"]) > 0 for r in rows)
    ops = list(csv.DictReader(out.with_suffix(".ops.csv").open()))
    assert {(r["model"], r["mode"]) for r in ops} == {("unet", "call"), ("unet", "train")}
    assert all(r["device_name"] and r["op"] and r["op_class"] for r in ops)
    train = next(r for r in rows if r["part"] == "ops_train")
    assert sum(float(r["self_ms"]) for r in ops if r["mode"] == "train") == pytest.approx(float(train["total_ms"]))
