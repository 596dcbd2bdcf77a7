"""Training loop: AdamW with warm-up, EMA, mixed precision on CUDA, gradient clipping, atomic
checkpoints, exact resume, progress bar and a CSV loss log.

Randomness is a function of ``(seed, step)`` alone: step ``k`` draws its batch indices, flips,
diffusion steps, noise (and a slimmable network's middle width, and with ``sandwich_noise:
per_width`` each narrower pass's steps and noise; :mod:`.batches`) from a generator seeded with
``seed`` and ``k``, and seeds dropout from it, so a resumed run continues exactly as an unbroken one.
A step whose loss (at any width) or gradient is not finite is never applied (:mod:`.divergence`).

Files in ``out_dir``: ``resume.pt`` (full state: model, EMA, optimizer, step, loss
history), ``loss.csv`` (step, loss, grad_norm, lr, seconds), and at the end ``ema.pt``
(the inference snapshot: EMA weights and the metadata needed to rebuild the model).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import __version__, distributed
from .batches import BatchSource, sandwich_widths, step_generator
from .config import ConfigError, to_dict
from .diffusion import Diffusion
from .divergence import StepGuard
from .io import atomic_open, load_torch, save_json, save_torch
from .models.ddpm import is_slimmable
from .snapshot import EMA_FILE, save_snapshot
from .specs.train import SANDWICH_NOISE, TrainConfig, learning_rate, work  # noqa: F401  (re-exported)
from .speed import SpeedConfig, compile_module, optimizer, prepare_model, to_layout

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
LOSS_FILE = "loss.csv"
SUPERSEDED_DIR = "superseded"
LOSS_COLUMNS = ("step", "loss", "grad_norm", "lr", "seconds")


class EMA:
    """Exponential moving average of weights, ``e <- d e + (1 - d) w`` with warm-up
    ``d = min(decay, (1 + k) / (10 + k))`` at step ``k``; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


@dataclass
class TrainResult:
    """Where a run ended and what it wrote."""

    step: int
    final_loss: float
    snapshot: Path
    resumed_from: int


# Keys of ``meta["train"]`` that do not change the trained weights: a resume may differ in them.
# (``steps`` may grow: the run continues; a checkpoint beyond the steps asked is a difference.)
# ``gpus`` may change too: the global batch is the same, the result equal up to float rounding.
_RESUMABLE_TRAIN_KEYS = ("steps", "checkpoint_every", "gpus")


def config_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """The first difference between a checkpoint's ``meta`` and this run's, as
    ``"key: A there, B now"``, or ``None`` when the checkpoint can be resumed. A ``train`` key
    the checkpoint predates (such as ``warmup_steps``) is no difference while it has its default."""
    defaults = to_dict(TrainConfig())
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if key == "train":
            a = {k: v for k, v in (a or {}).items() if k not in _RESUMABLE_TRAIN_KEYS}
            b = {k: v for k, v in (b or {}).items()
                 if k not in _RESUMABLE_TRAIN_KEYS and (k in a or v != defaults.get(k))}
        if a != b:
            return f"{key}: {a!r} there, {b!r} now"
    return None


def fingerprint(meta: Mapping[str, Any]) -> str:
    """A short hash of a run's ``meta``: names the resume state a configuration wrote."""
    text = json.dumps(meta, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _set_aside(resume_path: Path, saved_meta: Mapping[str, Any]) -> Path:
    """Move a stale resume state to ``superseded/resume-<fingerprint>.pt`` beside it (kept, not deleted)."""
    target = resume_path.parent / SUPERSEDED_DIR / f"resume-{fingerprint(saved_meta)}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(resume_path, target)
    return target


def _resume_state(
    path: Path, meta: Mapping[str, Any], steps: int, on_config_change: str, move: bool = True
) -> dict[str, Any] | None:
    """The resume state at ``path`` when it belongs to this run; ``None`` when there is none or
    (``on_config_change="restart"``) it was set aside; else a ``ConfigError`` naming the difference."""
    if not path.exists():
        return None
    # On the CPU: load_state_dict copies each tensor to its parameter's device, and the optimizer's
    # step counts stay CPU scalars (unfused AdamW reads a GPU one back to the host every step).
    state = load_torch(path, map_location="cpu", what="a resume state written by missingu train")
    difference = config_difference(state["meta"], meta)
    if difference is None and state["step"] > steps:
        difference = f"train.steps: the checkpoint is at step {state['step']}, beyond the {steps} asked now"
    if difference is None:
        return state
    if on_config_change != "restart":
        raise ConfigError(
            f"{path} was written by a different configuration ({difference}); delete it or restart "
            f"explicitly (missingu train --restart-on-change moves it to {SUPERSEDED_DIR}/), or use another "
            f"output folder"
        )
    if not move:  # another process (rank 0) sets it aside
        return None
    moved = _set_aside(path, state["meta"])
    log.warning("%s was written by a different configuration (%s); moved it to %s and training from step 0",
                path, difference, moved)
    return None


def _write_loss_csv(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_open(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def train(
    model: nn.Module,
    diffusion: Diffusion,
    images: Tensor,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    meta: Mapping[str, Any] | None = None,
    record: Mapping[str, Any] | None = None,
    hflip: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
    on_config_change: Literal["refuse", "restart"] = "refuse",
    speed: SpeedConfig | None = None,
) -> TrainResult:
    """Train ``model`` to denoise ``images`` (uint8, N x C x H x W) for ``config.steps`` steps.

    Resumes from ``out_dir/resume.pt`` when present and its ``meta`` matches (``train.steps``
    may grow, ``train.checkpoint_every`` may change). A checkpoint of another configuration, or
    one beyond ``config.steps``, is refused (``on_config_change="refuse"``, a ``ConfigError``
    naming the difference) or moved to ``out_dir/superseded/`` and training starts from step 0
    (``"restart"``: the pipeline's choice, since Snakemake reruns training exactly when the
    configuration changed). ``meta`` (plain data: architecture, model and diffusion config,
    dataset, the model's recipe) goes into every checkpoint; ``record`` (the resolved run config)
    is written to ``config.json`` once the checkpoint, if any, is known to belong to this run.
    ``hflip`` flips half the images left-right (for datasets where that is a valid augmentation).
    ``on_step(step, loss)`` is called after each optimizer step. ``speed`` switches on fast paths
    (channels_last, compile, fused AdamW, the attention kernel, images kept on the GPU) that leave
    the result unchanged up to float rounding (``data_on_device``: to the bit).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    main = distributed.world()[1] == 0  # the process that writes files
    meta = dict(meta or {})
    resume_path, loss_path = out_dir / RESUME_FILE, out_dir / LOSS_FILE
    diffusion = diffusion.to(device)
    speed = (speed or SpeedConfig()).on(device)
    model.to(device).train()
    distributed.slice_dropout(model)  # one global batch's masks, sliced (the same for any process count)
    prepare_model(model, speed)
    ema = EMA(model, config.ema_decay)
    opt = optimizer(model, speed, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype] if use_amp else "fp32"

    start, history, elapsed, window = 0, [], 0.0, [0.0, 0]
    last_saved: int | None = None
    state = _resume_state(resume_path, meta, config.steps, on_config_change, move=main)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        saved = state.get("precision", precision)  # a resume state from before the key: the same
        if saved != precision:  # another device (CPU to GPU, say): the run goes on, in this precision
            log.warning("%s was trained in %s; it continues in %s on %s", resume_path, saved, precision, device)
        if state["scaler"]:  # a disabled scaler's state is empty: an enabled one starts afresh
            scaler.load_state_dict(state["scaler"])
        start, history, elapsed = state["step"], list(state["history"]), state["elapsed"]
        window, last_saved = list(state["window"]), start
        log.info("resuming %s from step %d of %d", out_dir, start, config.steps)
    if record is not None and main:
        save_json(record, out_dir / "config.json")
    if main:
        _write_loss_csv(loss_path, history)
    net = distributed.wrap(model, device)
    if speed.compile:
        net = compile_module(net)
    batches = BatchSource(images, diffusion, config.batch_size, hflip, device, on_device=speed.data_on_device)

    def checkpoint(step: int) -> None:
        if not main:
            return
        save_torch(
            {
                "step": step, "model": model.state_dict(), "ema": ema.model.state_dict(),
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "precision": precision,
                "history": history,
                "elapsed": elapsed, "window": window, "meta": meta, "version": __version__,
            },
            resume_path,
        )

    loss_value = math.nan
    t_run = time.perf_counter() - elapsed
    bar = tqdm(total=config.steps, initial=start, desc=f"train {out_dir.name}", unit="step",
               disable=not progress or not main, mininterval=2.0)
    with open(loss_path, "a", newline="") if main else contextlib.nullcontext() as log_fh:
        writer = csv.DictWriter(log_fh, fieldnames=LOSS_COLUMNS) if main else None
        for step in range(start, config.steps):
            g = step_generator(seed, step)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))  # dropout: the same on every rank
            x0, t, noise = batches(g)
            x0 = to_layout(x0, speed)
            opt.zero_grad(set_to_none=True)
            lr = learning_rate(config, step)
            for group in opt.param_groups:
                group["lr"] = lr
            widths = sandwich_widths(model, g)
            guard = StepGuard(model, widths, check_grads=not scaler.is_enabled())  # fp16: the scaler skips
            for i, width in enumerate(widths):
                if width is not None:
                    model.width = width
                if i > 0 and config.sandwich_noise == "per_width":
                    t, noise = batches.redraw(g)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss = diffusion.loss(net, x0, t, to_layout(noise, speed))
                scaler.scale(loss).backward()
                guard.passed(loss)
            if is_slimmable(model):
                model.width = 1.0
            scaler.unscale_(opt)
            max_norm = config.grad_clip if config.grad_clip is not None else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
            loss_value = guard.check(step + 1, grad_norm, last_saved, resume_path)[0]  # the full width's is logged
            scaler.step(opt)
            scaler.update()
            ema.update(model, step)
            window[0] += loss_value
            window[1] += 1
            done = step + 1
            elapsed = time.perf_counter() - t_run
            if done % config.log_every == 0 or done == config.steps:
                row = {"step": done, "loss": window[0] / window[1], "grad_norm": grad_norm,
                       "lr": lr, "seconds": round(elapsed, 3)}
                history.append(row)
                if writer is not None:
                    writer.writerow(row)
                    log_fh.flush()
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                log.info("step %d loss %.5f grad_norm %.3f", done, row["loss"], grad_norm)
                window = [0.0, 0]
            if done % config.checkpoint_every == 0 or done == config.steps:
                checkpoint(done)
                last_saved = done
            bar.update()
            if on_step is not None:
                on_step(done, loss_value)
    bar.close()
    snapshot = out_dir / EMA_FILE
    if main:
        save_snapshot(ema.model, meta, config.steps, snapshot)
        log.info("wrote %s (step %d)", snapshot, config.steps)
    return TrainResult(config.steps, loss_value, snapshot, start)
