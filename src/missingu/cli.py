"""``missingu`` command line: one command per pipeline step, explicit paths, one config file.

    missingu prepare-data --config C --dataset D --split train --out data.pt
    missingu train        --config C --dataset D --model M --out-dir DIR [--data data.pt]
    missingu sample       --config C --checkpoint DIR/ema.pt --sampler S --out samples.pt [--grid g.png]
                          [--strategy s.yaml --mix cunet=ema.pt]
    missingu info         --config C [--dataset D] [--model M]
    missingu denoise      --config C --checkpoint DIR/ema.pt --data test.pt --out denoising.csv
                          [--torch-home resources/torch_home]
    missingu fetch-weights [--torch-home resources/torch_home] [--weights lpips_alex,inception]
    missingu train-classifier --config C --data train.pt --test test.pt --out classifier.pt
    missingu evaluate     --config C --samples S.pt --classifier classifier.pt --data train.pt --test test.pt
                          --out quality.json [--torch-home resources/torch_home]
    missingu profile      --config C --out efficiency.csv [--checkpoint D/M=ema.pt ...] [--models M,..]
                          [--shapes 3x64x64,..] [--merge]
    missingu stepaware    --config C --checkpoint ddsm=ema.pt [--checkpoint cunet=ema.pt] --classifier classifier.pt
                          --data train.pt --test test.pt --out stepaware.csv
    missingu bench        --config C --out bench.csv [--models M,..] [--variants eager,autocast+compile,..]
                          [--parts train,call,sample] [--peak-tflops 989]

``--config-json '{...}'`` gives the config inline instead of a file (the pipeline passes each
step only the config entries it depends on, so Snakemake reruns exactly what changed).

``--set key.sub=value`` overrides any config key (list entries by name:
``--set models.unet.preset=tiny``). Errors in the config are reported before any work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__, distributed
from .bench import BenchConfig, run_bench
from .classifier import accuracy, load_classifier, save_classifier, train_classifier
from .config import ConfigError, apply_overrides, build, to_dict
from .data import DatasetUnavailable, ImageSet, load_imageset, save_imageset, to_uint8
from .denoising import Curve, Scorer, curve_rows, image_rows, run_denoising, summary_rows
from .diffusion import Diffusion, DiffusionConfig
from .evaluate import evaluate_samples
from .experiment import ExperimentConfig, load_experiment, parse_experiment, resolve_device
from .io import InputFileError, load_torch, save_grid, save_json, save_torch
from .models import model_from_meta, model_from_spec
from .models.ddpm import is_slimmable
from .profile_run import (
    check_checkpoints,
    journal_path,
    merge_rows,
    parse_shape,
    plan,
    read_rows,
    run_profile,
    write_rows,
)
from .profiling import count_parameters, environment, measure_call
from .samplers import SamplerSpec, sample, sampler_steps
from .speed import FastDenoiser, SpeedConfig
from .stepaware import StepAwareDenoiser, Strategy, label, output_shape, run_study, validate, visited_steps
from .train import TrainingDiverged, load_snapshot, train
from .weights import DEFAULT_TORCH_HOME, WEIGHTS, WeightsUnavailable, fetch_weights, missing_weights, stage_hint

log = logging.getLogger("missingu")


def _setup(args: argparse.Namespace) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if getattr(args, "log", None):
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _experiment(args: argparse.Namespace) -> ExperimentConfig:
    if args.config_json is not None:
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config-json is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError("--config-json must hold a JSON object")
        return parse_experiment(apply_overrides(data, args.set or ()))
    return load_experiment(args.config, args.set or ())


def _train_data(args: argparse.Namespace, cfg: ExperimentConfig) -> ImageSet:
    if args.data:
        return load_imageset(args.data)
    return cfg.dataset(args.dataset).load("train")


def cmd_prepare_data(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    spec = cfg.dataset(args.dataset)
    data = spec.load(args.split)
    save_imageset(data, args.out, dataset=spec.name, split=args.split)
    log.info("wrote %s: %d images of shape %s", args.out, len(data), data.shape)


def run_meta(cfg: ExperimentConfig, dataset: str | None, model: str | None) -> dict:
    """The plain-data description of a training run, stored in its checkpoints."""
    data, spec = cfg.dataset(dataset), cfg.model(model)
    return {
        "model_name": spec.name, "arch": spec.arch, "model": to_dict(spec.resolve()),
        "dataset": data.name, "image_shape": [data.channels, data.size, data.size], "hflip": data.hflip,
        "diffusion": to_dict(cfg.diffusion), "train": to_dict(cfg.train), "seed": cfg.seed,
    }


def _launch_processes(args: argparse.Namespace, count: int) -> int:
    """Run this same ``train`` command in ``count`` data-parallel processes with torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
           "-m", "missingu.cli", *args.argv]
    log.info("train.gpus is %d: launching %s", count, " ".join(cmd[:6]))
    return subprocess.run(cmd).returncode


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _experiment(args)
    if cfg.train.gpus > 1 and not distributed.launched():
        return _launch_processes(args, cfg.train.gpus)
    meta = run_meta(cfg, args.dataset, args.model)
    c, h, w = meta["image_shape"]
    torch.manual_seed(cfg.seed)  # the initial weights, like everything else, follow from the seed
    model = model_from_spec(cfg.model(args.model), c, h)
    device = resolve_device(args.device or cfg.device)
    if distributed.launched():
        size = int(os.environ["WORLD_SIZE"])
        if size != cfg.train.gpus:
            raise ConfigError(f"train.gpus: {cfg.train.gpus}, but torchrun started {size} processes")
        device = distributed.setup(device)
        torch.set_num_threads(max(1, (args.threads or torch.get_num_threads()) // size))
        if distributed.world()[1] != 0:  # one log: rank 0's
            logging.getLogger().setLevel(logging.WARNING)
    data = _train_data(args, cfg)
    if data.shape != (c, h, w):
        raise ConfigError(f"--data {args.data} holds images of shape {data.shape}, the config wants {(c, h, w)}")
    out = Path(args.out_dir)
    log.info("training %s (%s, %d parameters) on %s (%d images) on %s for %d steps",
             meta["model_name"], meta["arch"], count_parameters(model), meta["dataset"], len(data),
             device, cfg.train.steps)
    record = {"meta": meta, "config": to_dict(cfg), "version": __version__,
              "parameters": count_parameters(model), "device": str(device)}
    train(model, Diffusion(cfg.diffusion), data.images, cfg.train, out, seed=cfg.seed, device=device,
          meta=meta, record=record, hflip=meta["hflip"], progress=not args.no_progress,
          on_config_change="restart" if args.restart_on_change else "refuse", speed=cfg.speed)
    return 0


def cmd_sample(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    spec = cfg.sampler(args.sampler)
    blob = load_snapshot(args.checkpoint)
    device = resolve_device(args.device or cfg.device)
    model = model_from_meta(blob["meta"], blob["state_dict"]).to(device)
    denoiser = model if cfg.speed == SpeedConfig() else FastDenoiser(model, cfg.speed, device)
    diffusion = Diffusion(build(DiffusionConfig, blob["meta"]["diffusion"], "diffusion"))
    if args.strategy is not None:
        denoiser = _stepaware_denoiser(args, model, blob["meta"], spec, diffusion.timesteps, device)
    n = args.num_samples or cfg.sample.num_samples
    batch = args.batch_size or cfg.sample.batch_size
    seed = cfg.seed if args.seed is None else args.seed
    shape = blob["meta"]["image_shape"]
    chunks, calls, start = [], 0, time.perf_counter()
    nfe: int | None = None
    for first in range(0, n, batch):
        seeds = [seed * 1_000_003 + k for k in range(first, min(n, first + batch))]
        out = sample(denoiser, diffusion, spec, shape, seeds, device=device, progress=not args.no_progress)
        chunks.append(out.images.cpu())
        calls += out.network_calls
        nfe = None if out.ode_evaluations is None else (nfe or 0) + out.ode_evaluations
        log.info("sampled %d / %d with %s", first + len(seeds), n, spec.name)
    seconds = time.perf_counter() - start
    images = torch.cat(chunks)
    save_torch({"images": images, "sampler": to_dict(spec), "seed": seed, "model": blob["meta"]}, args.out)
    if args.grid:
        save_grid(images[: args.grid_size], args.grid)
    batches = len(chunks)
    save_json({
        "sampler": to_dict(spec), "num_samples": n, "batch_size": batch, "seed": seed,
        "checkpoint": str(args.checkpoint), "model": blob["meta"], "device": str(device),
        "strategy": None if args.strategy is None else str(args.strategy),
        "network_calls_per_batch": calls // batches,
        "ode_evaluations_per_batch": None if nfe is None else nfe // batches,
        "seconds": seconds, "version": __version__,
    }, Path(args.out).with_suffix(".json"))
    log.info("wrote %s (%d images, %.1f s)", args.out, n, seconds)


def _stepaware_denoiser(args: argparse.Namespace, model: torch.nn.Module, meta: dict, spec: SamplerSpec,
                        timesteps: int, device: torch.device) -> StepAwareDenoiser:
    """The denoiser of ``--strategy``: widths of the checkpoint's (slimmable) model and the ``--mix``
    models, checked against the strategy before any sampling."""
    strategy = Strategy.load(args.strategy)
    visited_steps(spec.kind, timesteps, spec.steps)  # DDPM or DDIM only
    networks: dict = {}
    if is_slimmable(model):
        networks.update({float(w): model for w in model.config.widths})
    for name, path in _pairs(args.mix or [], "--mix", "NAME=ema.pt"):
        other = load_snapshot(path)
        networks[name] = model_from_meta(other["meta"], other["state_dict"]).to(device)
    shapes = {c: output_shape(net, meta["image_shape"], device) for c, net in networks.items()}
    validate(strategy, timesteps, list(networks), shapes)
    return StepAwareDenoiser(strategy, networks, model if is_slimmable(model) else None)


def cmd_info(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    datasets = [cfg.dataset(args.dataset)] if args.dataset else list(cfg.datasets)
    models = [cfg.model(args.model)] if args.model else list(cfg.models)
    rows = []
    for data in datasets:
        shape = (data.channels, data.size, data.size)
        for spec in models:
            model = model_from_spec(spec, *shape[:2])
            cost = measure_call(model, shape)
            rows.append((spec.name, spec.arch, spec.preset, data.name, "x".join(map(str, shape)),
                         f"{count_parameters(model):,}", f"{cost.flops / 1e9:.3f}", f"{cost.macs / 1e9:.3f}",
                         "-" if cost.nfe is None else str(cost.nfe)))
    _print_table(("model", "arch", "preset", "dataset", "CxHxW", "parameters", "GFLOPs/call",
                  "GMACs/call", "ODE evals/call"), rows)


def _checkpoint_map(items: Sequence[str]) -> dict[tuple[str, str], Path]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        dataset, slash, model = key.partition("/")
        if not (sep and slash and dataset and model and path):
            raise ConfigError(f"--checkpoint {item!r} must look like DATASET/MODEL=PATH")
        out[(dataset, model)] = Path(path)
    return out


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name for name in text.split(",") if name]


def cmd_profile(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    device = resolve_device(args.device or cfg.device)
    checkpoints = _checkpoint_map(args.checkpoint or [])
    check_checkpoints(cfg, checkpoints)  # unknown names and mismatched files fail here, before any work
    shapes = None if args.shapes is None else [parse_shape(s) for s in _names(args.shapes)]
    jobs = plan(cfg, checkpoints, models=_names(args.models), shapes=shapes)
    earlier = read_rows(args.out) if args.merge and args.out.is_file() else []
    journal = journal_path(args.out)
    log.info("profiling %d rows on %s; each row is kept in %s as it is measured", len(jobs), device, journal)
    rows = run_profile(cfg, device, jobs, journal, progress=not args.no_progress,
                       on_row=lambda so_far: write_rows(merge_rows(earlier, so_far), args.out))
    merged = merge_rows(earlier, rows)
    write_rows(merged, args.out)
    journal.unlink()
    log.info("wrote %s (%d rows of this run, %d kept from before, %s)", args.out, len(rows),
             len(merged) - len(rows), rows[0]["device_name"] if rows else "no rows")


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = _experiment(args)
    device = resolve_device(args.device or cfg.device)
    changes = {k: tuple(_names(v)) for k, v in (("variants", args.variants), ("parts", args.parts)) if v}
    if args.peak_tflops is not None:
        changes["peak_tflops"] = args.peak_tflops
    bench = build(BenchConfig, {**to_dict(cfg.bench), **changes}, "bench")
    log.info("benchmarking on %s: variants %s, parts %s", device, ", ".join(bench.variants), ", ".join(bench.parts))
    rows = run_bench(cfg, bench, device, models=_names(args.models), on_row=lambda so_far: write_rows(so_far, args.out))
    write_rows(rows, args.out)
    failed = [r for r in rows if str(r["status"]).startswith("failed")]
    for r in failed:  # kept as rows (the table shows them), not a failed job
        log.error("bench %s %s %s: %s", r["model"], r["variant"], r["part"], r["status"])
    log.info("wrote %s (%d rows, %d failed, %s)", args.out, len(rows), len(failed), rows[0]["device_name"])
    return 0


def cmd_stepaware(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    sa = cfg.stepaware
    if not sa.model:
        raise ConfigError("stepaware.model: empty; name the slimmable model entry to study")
    device = resolve_device(args.device or cfg.device)
    checkpoints = dict(_pairs(args.checkpoint or [], "--checkpoint", "MODEL=PATH"))
    wanted = [sa.model, *sa.mix]
    missing = [m for m in wanted if m not in checkpoints]
    if missing:
        raise ConfigError(f"--checkpoint: give {', '.join(f'{m}=ema.pt' for m in missing)} (stepaware.model and "
                          f"stepaware.mix need trained weights)")
    models = {}
    for name in wanted:
        blob = load_snapshot(checkpoints[name])
        if blob["meta"].get("model_name") != name:
            raise InputFileError(f"--checkpoint {name}={checkpoints[name]}: it holds model "
                                 f"{blob['meta'].get('model_name')!r}, not {name!r}")
        models[name] = (model_from_meta(blob["meta"], blob["state_dict"]).to(device), blob["meta"])
    slim, meta = models.pop(sa.model)
    diffusion = Diffusion(build(DiffusionConfig, meta["diffusion"], "diffusion")).to(device)
    shape = tuple(meta["image_shape"])
    spec = cfg.sampler(sa.sampler)
    train, test = load_imageset(args.data), load_imageset(args.test)
    record: dict = {"settings": to_dict(sa), "sampler": to_dict(spec), "device": str(device), "version": __version__}
    gen = torch.Generator().manual_seed(cfg.seed)
    if sa.quality == "classifier":
        if args.classifier is None:
            raise ConfigError("--classifier: stepaware.quality is classifier; give the classifier.pt of "
                              "`missingu train-classifier`")
        from .classifier import extract_features
        from .evaluate import classifier_reference
        from .metrics.frechet import frechet_distance_features

        classifier, crecord = load_classifier(args.classifier, device)
        reference, pool, name = classifier_reference(train, test, crecord)
        ref_features = extract_features(classifier, reference.to(device))

        def score(images: torch.Tensor) -> float:
            return frechet_distance_features(ref_features, extract_features(classifier, images.to(device)))

        real = pool[torch.randperm(len(pool), generator=gen)[: sa.samples]]
        record.update(quality="classifier Frechet distance", reference=name, quality_floor=score(real))
    else:
        from .metrics.fid import fidelity_metrics

        chosen = train.images[torch.randperm(len(train), generator=gen)[: cfg.evaluate.reference_images]]

        def score(images: torch.Tensor) -> float:
            return float(fidelity_metrics(images, chosen, args.torch_home, device=device)["fid"])

        record.update(quality="FID", reference="train split", quality_floor=None)
    log.info("step-aware study of %s on %s with %s: %d samples per strategy, %s search", sa.model, device, spec.name,
             sa.samples, sa.objective)
    stem = args.out.with_suffix("")
    start = time.perf_counter()

    def write(rows: list[dict]) -> None:
        write_rows([{k: v for k, v in r.items() if k != "steps"} | {"quality_floor": record["quality_floor"]}
                    for r in rows], args.out)

    rows, history, networks = run_study(slim, {n: m for n, (m, _) in models.items()}, diffusion, spec, shape, score,
                                        sa, device=device, on_row=write, log=log.info)
    write(rows)
    write_rows(history, stem.with_name(stem.name + ".history.csv"))
    chosen_rows = [r for r in rows if r["kind"] != "candidate"]
    save_json({r["strategy"]: Strategy(r["steps"]).to_data() for r in chosen_rows},
              stem.with_name(stem.name + ".strategies.json"))
    searched = next(r for r in rows if r["kind"] == "search")
    Strategy(searched["steps"]).save(stem.with_name(stem.name + ".strategy.yaml"))
    record.update(networks={label(c): {"gflops_per_call": n.flops / 1e9} for c, n in networks.items()},
                  seconds=time.perf_counter() - start, model=meta, evaluations=len(rows))
    save_json(record, stem.with_name(stem.name + ".json"))
    log.info("wrote %s: searched strategy %.4g GFLOPs per call (%.0f%% saved), quality %.4g", args.out,
             searched["mean_gflops"], 100 * searched["saving"], searched["quality"])


def _pairs(items: Sequence[str], option: str, form: str) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option} {item!r}: write {form}")
        out.append((key, Path(value)))
    return out


def cmd_denoise(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    dc = cfg.denoise
    blob = load_snapshot(args.checkpoint)
    meta = blob["meta"]
    device = resolve_device(args.device or cfg.device)
    data = load_imageset(args.data)
    if list(data.shape) != list(meta["image_shape"]):
        raise ConfigError(f"--data {args.data} holds images of shape {data.shape}; the checkpoint's model "
                          f"takes {tuple(meta['image_shape'])}")
    model = model_from_meta(meta, blob["state_dict"]).to(device).eval()
    diffusion = Diffusion(build(DiffusionConfig, meta["diffusion"], "diffusion"))
    clean = data.images[: dc.num_images].float() / 255
    lpips_model, lpips_note = None, "not computed: denoise.lpips is false"
    if dc.lpips:
        try:
            from .metrics import load_lpips

            lpips_model, lpips_note = load_lpips(args.torch_home, device), None
        except WeightsUnavailable as err:
            lpips_note = str(err)
            log.warning("LPIPS %s", lpips_note)
    scorer = Scorer(data.shape[-1], lpips_model, lpips_note)
    env = environment(device)
    fixed = {"dataset": meta["dataset"], "model": meta["model_name"], "arch": meta["arch"],
             "reverse": dc.reverse, "device": env["device"], "device_name": env["device_name"]}
    log.info("denoising %d test images of %s with %s on %s: sigmas %s, protocols %s", len(clean), meta["dataset"],
             meta["model_name"], device, list(dc.sigmas), list(dc.protocols))
    start = time.perf_counter()
    def report(curve: Curve) -> None:
        psnr = curve.values["psnr"]
        log.info("%s sigma %g from step %d: PSNR %.2f dB noisy, %.2f dB at step %d (%.4f s per image)",
                 curve.protocol, curve.sigma, curve.t_start, psnr[0].mean(), psnr[curve.reported_step()].mean(),
                 curve.reported_step(), curve.seconds_per_image)

    curves, examples = run_denoising(model, diffusion, clean, dc, scorer, seed=cfg.seed, device=device,
                                     progress=not args.no_progress, on_curve=report)
    out = Path(args.out)
    write_rows([r for c in curves for r in summary_rows([c], scorer.notes, **fixed)], out)
    write_rows([r for c in curves for r in curve_rows(c, scorer.notes, **fixed)], out.with_suffix(".curves.csv"))
    write_rows([r for c in curves for r in image_rows(c, scorer.notes, **fixed)], out.with_suffix(".images.csv"))
    save_torch({"sigmas": list(examples), "examples": [examples[s] for s in examples], **fixed},
               out.with_suffix(".examples.pt"))
    save_json({**fixed, "checkpoint": str(args.checkpoint), "data": str(args.data), "images": len(clean),
               "denoise": to_dict(dc), "notes": scorer.notes, "seconds": time.perf_counter() - start,
               "t_start": {f"{c.protocol}/{c.sigma}": c.t_start for c in curves},
               "version": __version__, "torch": env["torch"], "threads": env["threads"]},
              out.with_suffix(".json"))
    log.info("wrote %s (+ .curves.csv, .images.csv, .examples.pt, .json) in %.1f s", out,
             time.perf_counter() - start)


def cmd_train_classifier(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    spec = cfg.dataset(args.dataset)
    device = resolve_device(args.device or cfg.device)
    train, test = load_imageset(args.data), load_imageset(args.test)
    log.info("training the quality classifier on %s (%d images, %d classes) on %s", spec.name, len(train),
             len(set(train.labels.tolist())), device)
    model, record = train_classifier(train.images, train.labels, cfg.evaluate.classifier, seed=cfg.seed,
                                     device=device, progress=not args.no_progress)
    known = set(record["classes"])
    if len(test) and set(test.labels.tolist()) <= known:
        record["test_accuracy"] = accuracy(model, test.images.to(device), test.labels.to(device))
    else:
        record["test_accuracy"] = None
        record["test_accuracy_note"] = ("the test split's labels are not among the training classes: see "
                                        "holdout_accuracy")
    record.update(dataset=spec.name, device=str(device))
    save_classifier(model, record, args.out)
    save_json(record, Path(args.out).with_suffix(".json"))
    log.info("wrote %s: train accuracy %.3f, holdout %s, test %s", args.out, record["train_accuracy"],
             record.get("holdout_accuracy"), record["test_accuracy"])


def cmd_evaluate(args: argparse.Namespace) -> None:
    cfg = _experiment(args)
    device = resolve_device(args.device or cfg.device)
    blob = load_torch(args.samples, what="samples written by `missingu sample` (images in [-1, 1])")
    images = blob.get("images") if isinstance(blob, dict) else None
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputFileError(f"{args.samples} is not samples written by `missingu sample`")
    summary_path = Path(args.samples).with_suffix(".json")
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} (the sampling summary beside {args.samples}) does not exist")
    summary = json.loads(summary_path.read_text())
    classifier, record = load_classifier(args.classifier, device)
    train, test = load_imageset(args.data), load_imageset(args.test)
    samples = to_uint8(images)
    if tuple(samples.shape[1:]) != train.shape:
        raise ConfigError(f"--samples {args.samples} holds images of shape {tuple(samples.shape[1:])}; the dataset's "
                          f"are {train.shape}")
    meta = blob.get("model", {})
    log.info("evaluating %d samples of %s (%s) on %s", len(samples), meta.get("model_name"), summary["sampler"]["name"],
             device)
    start = time.perf_counter()
    scores = evaluate_samples(samples, train, test, classifier, record, cfg.evaluate, torch_home=args.torch_home,
                              seed=cfg.seed, device=device)
    sampler = summary["sampler"]
    out = {
        "dataset": meta.get("dataset"), "model": meta.get("model_name"), "arch": meta.get("arch"),
        "sampler": sampler["name"], "kind": sampler["kind"],
        "steps": sampler_steps(build(SamplerSpec, sampler, "sampler"), meta.get("diffusion", {}).get("timesteps")),
        "network_calls": summary["network_calls_per_batch"], "num_samples": summary["num_samples"],
        "seconds_per_image": summary["seconds"] / summary["num_samples"], "device": summary["device"],
        "classifier_accuracy": record.get("test_accuracy") if record.get("test_accuracy") is not None
        else record.get("holdout_accuracy"),
        **scores, "samples": str(args.samples), "evaluate_seconds": time.perf_counter() - start,
        "evaluate_device": str(device), "version": __version__,
    }
    save_json(out, args.out)
    log.info("wrote %s: classifier FD %.4g (real vs real %.4g), FID %s", args.out, out["classifier_fd"],
             out["classifier_fd_real"], out["fid"])


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    names = _names(args.weights) or list(WEIGHTS)
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise ConfigError(f"--weights: unknown {unknown[0]!r}; allowed: {', '.join(WEIGHTS)}")
    problems = {}
    for name in names:
        try:
            fetch_weights([name], args.torch_home, progress=not args.no_progress)
        except WeightsUnavailable as err:
            problems[name] = str(err)
            log.warning("%s: %s", name, err)
    missing = set(missing_weights(names, args.torch_home))
    status = {name: {"file": WEIGHTS[name].file, "used_by": WEIGHTS[name].used_by, "present": name not in missing,
                     "note": problems.get(name, stage_hint(name, args.torch_home)) if name in missing else None}
              for name in names}
    if args.status:
        save_json({"torch_home": str(Path(args.torch_home).resolve()), "weights": status}, args.status)
    for name, entry in status.items():
        log.info("%s: %s", name, "present" if entry["present"] else entry["note"])
    if problems and not args.allow_missing:
        print(f"missingu: error: {len(problems)} weight file(s) could not be fetched; stage them by hand "
              f"(see above) or pass --allow-missing", file=sys.stderr)
        return 1
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in (header, ["-" * w for w in widths], *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def _common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="experiment config (YAML)")
    src.add_argument("--config-json", metavar="JSON", help="the experiment config inline, as JSON (the pipeline's way)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--log", type=Path, help="also log to this file")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="missingu", description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="version", version=f"missingu {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-data", help="read (download) a dataset split into one file")
    _common(p)
    p.add_argument("--dataset", help="dataset entry name (default: the only one)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(fn=cmd_prepare_data)

    p = sub.add_parser("train", help="train one model on one dataset (resumes from OUT_DIR/resume.pt)")
    _common(p)
    p.add_argument("--dataset", help="dataset entry name (default: the only one)")
    p.add_argument("--model", help="model entry name (default: the only one)")
    p.add_argument("--data", type=Path, help="prepared dataset file (default: load the dataset)")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--restart-on-change", action="store_true",
                   help="a resume.pt of another configuration is moved to OUT_DIR/superseded/ and training "
                        "starts over (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained model")
    _common(p)
    p.add_argument("--checkpoint", required=True, type=Path, help="ema.pt written by train")
    p.add_argument("--sampler", help="sampler entry name (default: the only one)")
    p.add_argument("--out", required=True, type=Path, help="samples (.pt); a .json summary goes beside")
    p.add_argument("--grid", type=Path, help="also write a PNG grid")
    p.add_argument("--grid-size", type=int, default=64, help="images in the grid")
    p.add_argument("--strategy", type=Path,
                   help="step-aware strategy (YAML/JSON: a width of the checkpoint's slimmable model or a --mix model "
                        "name per diffusion step); DDPM and DDIM samplers")
    p.add_argument("--mix", action="append", metavar="NAME=PATH", help="another model a --strategy names (repeatable)")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("profile", help="measure parameters, FLOPs, NFE, latency and memory (CSV)")
    _common(p)
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per model, variant and input shape")
    p.add_argument("--checkpoint", action="append", metavar="DATASET/MODEL=PATH",
                   help="trained weights (ema.pt) for a model at its dataset's shape (repeatable)")
    p.add_argument("--models", metavar="NAME,...", help="profile only these model entries")
    p.add_argument("--shapes", metavar="CxHxW,...", help="profile only these input shapes (e.g. 3x64x64)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of an existing OUT that this run does not measure (profile in parts)")
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_profile)

    p = sub.add_parser("bench", help="training images/s, FLOPs utilisation, memory, sampling latency (CSV)")
    _common(p)
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per model, variant, part and batch")
    p.add_argument("--models", metavar="NAME,...", help="only these model entries (the reference follows the U-Net)")
    p.add_argument("--variants", metavar="V,...",
                   help="instead of bench.variants: eager, or speed switches joined by '+' (autocast+compile)")
    p.add_argument("--parts", metavar="P,...", help="instead of bench.parts: train, call, sample")
    p.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s, for MFU")
    p.add_argument("--device", help="override the config's device")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("stepaware", help="step-aware sampling: baselines and an evolutionary search (DDSM)")
    _common(p)
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH",
                   help="ema.pt of stepaware.model and of each stepaware.mix model (repeatable)")
    p.add_argument("--classifier", type=Path, help="classifier.pt (train-classifier), for quality: classifier")
    p.add_argument("--data", required=True, type=Path, help="prepared train split")
    p.add_argument("--test", required=True, type=Path, help="prepared test split")
    p.add_argument("--out", required=True, type=Path,
                   help="CSV, one row per evaluated strategy; .history.csv, .strategies.json, .strategy.yaml "
                        "(the searched one) and .json go beside")
    p.add_argument("--torch-home", type=Path, default=DEFAULT_TORCH_HOME, help="staged Inception weights (for fid)")
    p.add_argument("--device", help="override the config's device")
    p.set_defaults(fn=cmd_stepaware)

    p = sub.add_parser("denoise", help="a trained model as a Gaussian denoiser: PSNR, SSIM, LPIPS per noise level")
    _common(p)
    p.add_argument("--checkpoint", required=True, type=Path, help="ema.pt written by train")
    p.add_argument("--data", required=True, type=Path, help="prepared test split (prepare-data --split test)")
    p.add_argument("--out", required=True, type=Path,
                   help="summary CSV (protocol x sigma); .curves.csv, .images.csv, .examples.pt and .json go beside")
    p.add_argument("--torch-home", type=Path, default=DEFAULT_TORCH_HOME,
                   help="where the LPIPS weights are staged (hub/checkpoints/ inside; default %(default)s)")
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_denoise)

    p = sub.add_parser("train-classifier", help="the small classifier of the classifier Frechet distance")
    _common(p)
    p.add_argument("--dataset", help="dataset entry name (default: the only one)")
    p.add_argument("--data", required=True, type=Path, help="prepared train split")
    p.add_argument("--test", required=True, type=Path, help="prepared test split (its accuracy)")
    p.add_argument("--out", required=True, type=Path, help="classifier (.pt); a .json record goes beside")
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_train_classifier)

    p = sub.add_parser("evaluate", help="sample quality: FID/KID and the classifier Frechet distance (JSON)")
    _common(p)
    p.add_argument("--samples", required=True, type=Path, help="samples (.pt) written by sample, its .json beside")
    p.add_argument("--classifier", required=True, type=Path, help="written by train-classifier")
    p.add_argument("--data", required=True, type=Path, help="prepared train split (FID's reference)")
    p.add_argument("--test", required=True, type=Path, help="prepared test split (the classifier distance's reference)")
    p.add_argument("--out", required=True, type=Path, help="JSON with every score, the sampler's cost and the device")
    p.add_argument("--torch-home", type=Path, default=DEFAULT_TORCH_HOME,
                   help="where the Inception weights are staged (default %(default)s)")
    p.add_argument("--device", help="override the config's device")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("fetch-weights", help="download the metric weights (LPIPS AlexNet, Inception) into TORCH_HOME")
    p.add_argument("--torch-home", type=Path, default=DEFAULT_TORCH_HOME, help="default %(default)s")
    p.add_argument("--weights", metavar="NAME,...", help=f"which (default all: {', '.join(WEIGHTS)})")
    p.add_argument("--status", type=Path, help="write what is present and what is missing (JSON)")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 when a file cannot be fetched (offline): metrics that need it say so")
    p.add_argument("--log", type=Path, help="also log to this file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_fetch_weights)

    p = sub.add_parser("info", help="parameters and FLOPs of the configured models")
    _common(p)
    p.add_argument("--dataset", help="only this dataset entry")
    p.add_argument("--model", help="only this model entry")
    p.set_defaults(fn=cmd_info)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    for key in ("num_samples", "batch_size", "threads", "grid_size"):
        value = getattr(args, key, None)
        if value is not None and value <= 0:
            print(f"missingu: error: --{key.replace('_', '-')} must be positive, got {value}", file=sys.stderr)
            return 2
    _setup(args)
    try:
        code = args.fn(args)
    except (ConfigError, DatasetUnavailable, FileNotFoundError, InputFileError, TrainingDiverged) as err:
        print(f"missingu: error: {err}", file=sys.stderr)
        if getattr(args, "log", None):
            with open(args.log, "a") as fh:
                fh.write(f"missingu: error: {err}\n")
        return 1
    return code or 0


if __name__ == "__main__":
    raise SystemExit(main())
