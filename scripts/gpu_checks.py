"""Correctness checks of the fast paths on a CUDA device; one JSON line per check on stdout.

    python scripts/gpu_checks.py [--size 64] [--compile-repro]

Each check compares a fast path with the plain computation on fresh random inputs and prints
the largest difference; nothing here is a speed measurement (that is ``missingu bench``).
``--compile-repro`` also compiles the paper U-Net's training step with inductor's defaults, to
show whether the torch.compile failure that ``missingu.speed.compile_module`` avoids occurs with
this torch.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torchdiffeq import odeint

from missingu.batches import BatchSource, step_generator
from missingu.diffusion import Diffusion
from missingu.models import ARCHITECTURES, build_model, ode_block
from missingu.speed import FastDenoiser, SpeedConfig, compile_module, use_sdpa


def emit(check: str, **values) -> None:
    print(json.dumps({"check": check, **values}), flush=True)


def paper(arch: str, size: int, device: torch.device, preset: str = "paper") -> torch.nn.Module:
    entry = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = build_model(arch, entry.config_cls(**entry.presets[preset]), 3, size).to(device)
    with torch.no_grad():  # zero-initialised last convs would make every output 0: randomise them
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return model.eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def check_graphs(size: int, device: torch.device) -> None:
    for arch in ("unet", "cunet"):
        model = paper(arch, size, device)
        for batch in (1, 8):
            x = torch.randn(batch, 3, size, size, device=device)
            t = torch.randint(0, 1000, (batch,), device=device)
            with torch.no_grad():
                eager = model(x, t)
            graphed = FastDenoiser(model, SpeedConfig(cuda_graphs=True), device)
            graphed(x, t)  # capture
            x2 = torch.randn_like(x)
            with torch.no_grad():
                eager2 = model(x2, t)
            out2 = graphed(x2, t)
            emit("cuda_graphs_equal_eager", arch=arch, batch=batch, max_abs=float((out2 - eager2).abs().max()),
                 equal=bool(torch.equal(out2, eager2)), first_call_equal=bool(torch.equal(graphed(x, t), eager)))


def check_solver(size: int, device: torch.device) -> None:
    model = paper("cunet", size, device)
    x = torch.randn(2, 3, size, size, device=device)
    t = torch.tensor([3, 700], device=device)
    with torch.no_grad():
        ours = model(x, t)
        original = ode_block.fixed_step_solve

        def torchdiffeq_solve(func, z0, method, grid):
            return odeint(func, z0, torch.linspace(0.0, 1.0, len(grid) + 1, device=z0.device), method=method)[-1]

        ode_block.fixed_step_solve = torchdiffeq_solve
        try:
            ref = model(x, t)
        finally:
            ode_block.fixed_step_solve = original
    emit("fixed_step_solver_equals_torchdiffeq", max_abs=float((ours - ref).abs().max()),
         equal=bool(torch.equal(ours, ref)))


def check_batches(device: torch.device) -> None:
    images = torch.randint(0, 256, (100, 3, 16, 16), dtype=torch.uint8)
    d = Diffusion()
    cpu = BatchSource(images, d, 32, True, device, on_device=False)
    gpu = BatchSource(images, d, 32, True, device, on_device=True)
    same = all(torch.equal(a, b) for k in range(5)
               for a, b in zip(cpu(step_generator(1, k)), gpu(step_generator(1, k))))
    emit("data_on_device_same_batches", equal=same)


def check_sdpa(size: int, device: torch.device) -> None:
    for arch in ("unet", "cunet"):
        model = paper(arch, size, device)
        x = torch.randn(4, 3, size, size, device=device)
        t = torch.randint(0, 1000, (4,), device=device)
        with torch.no_grad():
            explicit = model(x, t)
            use_sdpa(model, True)
            fused = model(x, t)
            use_sdpa(model, False)
        emit("sdpa_matches_explicit", arch=arch, rel=rel(fused, explicit))


def train_step(net, model, x0, t, noise, d):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = d.loss(net, x0, t, noise)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def check_compile(size: int, device: torch.device, repro: bool) -> None:
    d = Diffusion().to(device)
    for arch in ("unet", "cunet"):
        model = paper(arch, size, device).train()
        torch.manual_seed(1)
        x0 = torch.randn(16, 3, size, size, device=device)
        t = torch.randint(0, 1000, (16,), device=device)
        noise = torch.randn_like(x0)
        loss_e, grad_e = train_step(model, model, x0, t, noise, d)
        if repro and arch == "unet":
            t0 = time.perf_counter()
            try:
                train_step(torch.compile(model), model, x0, t, noise, d)
                emit("compile_inductor_defaults", arch=arch, status="ok", seconds=time.perf_counter() - t0)
            except RuntimeError as err:
                emit("compile_inductor_defaults", arch=arch, status=f"{type(err).__name__}: {str(err)[:300]}",
                     seconds=time.perf_counter() - t0)
            torch._dynamo.reset()
        t0 = time.perf_counter()
        compiled = compile_module(model)
        loss_c, grad_c = train_step(compiled, model, x0, t, noise, d)
        emit("compile_matches_eager", arch=arch, loss_eager=float(loss_e), loss_compiled=float(loss_c),
             grad_rel=rel(grad_c, grad_e), compile_s=time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--only", default="graphs,solver,batches,sdpa,compile")
    parser.add_argument("--compile-repro", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda")
    emit("device", name=torch.cuda.get_device_name(device), torch=torch.__version__)
    only = args.only.split(",")
    if "batches" in only:
        check_batches(device)
    if "solver" in only:
        check_solver(args.size, device)
    if "graphs" in only:
        check_graphs(args.size, device)
    if "sdpa" in only:
        check_sdpa(args.size, device)
    if "compile" in only:
        check_compile(args.size, device, args.compile_repro)


if __name__ == "__main__":
    main()
