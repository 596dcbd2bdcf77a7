"""missingu train-classifier and evaluate: the classifier distance ranks real images above noise,
FID says what to stage when the Inception weights are missing, photos use the held-out train
images as the reference, and the verdict on comparable quality."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from missingu.cli import main
from missingu.data import ImageSet, load_imageset, to_model_range
from missingu.evaluate import classifier_reference
from missingu.io import save_json, save_torch
from missingu.report import quality_claims
from pipeline_run import ROOT


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The smoke config's digits (8x8) with a classifier trained 150 steps."""
    root = tmp_path_factory.mktemp("quality")
    cfg = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    cfg["datasets"][0].pop("max_images")
    cfg["evaluate"] = {"classifier": {"steps": 150, "batch_size": 64, "width": 16, "feature_dim": 32}}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base = ["--config", str(path)]
    for split in ("train", "test"):
        assert main(["prepare-data", *base, "--split", split, "--out", str(root / f"{split}.pt")]) == 0
    assert main(["train-classifier", *base, "--data", str(root / "train.pt"), "--test", str(root / "test.pt"),
                 "--out", str(root / "classifier.pt"), "--no-progress"]) == 0
    return root, base


def _fake_samples(path, images: torch.Tensor, calls: int = 10, seconds: float = 2.0):
    """A samples file and its summary as `missingu sample` writes them (here: given images)."""
    meta = {"dataset": "digits", "model_name": "unet", "arch": "unet", "diffusion": {"timesteps": 50}}
    save_torch({"images": to_model_range(images), "model": meta}, path)
    save_json({"sampler": {"name": "ddim10", "kind": "ddim", "steps": 10, "eta": 0.0, "clip_denoised": True,
                           "method": "dopri5", "rtol": 1e-5, "atol": 1e-5},
               "num_samples": len(images), "network_calls_per_batch": calls, "seconds": seconds, "device": "cpu"},
              path.with_suffix(".json"))


def test_classifier_record_has_its_test_accuracy(classifier):
    root, _ = classifier
    record = json.loads((root / "classifier.json").read_text())
    assert record["num_classes"] == 10 and record["test_accuracy"] > 0.7


def test_evaluate_ranks_real_images_above_noise_and_names_the_inception_file(classifier, tmp_path):
    root, base = classifier
    train = load_imageset(root / "train.pt")
    real, noise = train.images[:64], torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    scores = {}
    for name, images in (("real", real), ("noise", noise)):
        samples = tmp_path / f"{name}.pt"
        _fake_samples(samples, images)
        out = tmp_path / f"{name}.quality.json"
        assert main(["evaluate", *base, "--samples", str(samples), "--classifier", str(root / "classifier.pt"),
                     "--data", str(root / "train.pt"), "--test", str(root / "test.pt"), "--out", str(out),
                     "--torch-home", str(tmp_path / "home")]) == 0
        scores[name] = json.loads(out.read_text())
    hint = f"not computed: stage weights-inception-2015-12-05-6726825d.pth in {(tmp_path / 'home/hub/checkpoints').resolve()}"
    for s in scores.values():
        assert s["fid"] == s["kid_mean"] == hint
        assert s["classifier_reference"] == "half of the test split" and s["num_samples"] == 64
        assert s["network_calls"] == 10
        assert s["seconds_per_image"] == pytest.approx(2.0 / 64) and s["steps"] == 10
        assert sum(s["label_histogram"].values()) == 64
    assert scores["noise"]["classifier_fd"] > 10 * scores["real"]["classifier_fd"]
    assert scores["real"]["classifier_fd"] < 3 * scores["real"]["classifier_fd_real"]
    assert scores["real"]["classes_covered"] == 10


def test_evaluate_with_fid_off_says_so(classifier, tmp_path):
    root, base = classifier
    samples = tmp_path / "s.pt"
    _fake_samples(samples, load_imageset(root / "test.pt").images[:16])
    out = tmp_path / "q.json"
    assert main(["evaluate", *base, "--set", "evaluate.fid=false", "--samples", str(samples), "--classifier",
                 str(root / "classifier.pt"), "--data", str(root / "train.pt"), "--test", str(root / "test.pt"),
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["fid"] == "not computed: evaluate.fid is false"


def test_a_test_split_of_other_classes_uses_the_held_out_train_images():
    labels = torch.arange(6).repeat_interleave(10)
    train = ImageSet(torch.arange(60, dtype=torch.uint8).reshape(60, 1, 1, 1).expand(60, 1, 8, 8).clone(), labels)
    test = ImageSet(torch.zeros(5, 1, 8, 8, dtype=torch.uint8), torch.full((5,), 7))
    record = {"classes": list(range(6)), "holdout_images": 12, "config": {"holdout": 0.2}, "seed": 0}
    reference, real, name = classifier_reference(train, test, record)
    assert name == "half of the held-out train images" and len(reference) == len(real) == 6
    from missingu.classifier import split_holdout

    kept, held = split_holdout(train.labels, 0.2, 0)
    unseen = set(train.images[held][:, 0, 0, 0].tolist())
    # both halves are images the classifier never trained on, and they do not overlap
    picked_ref, picked_real = set(reference[:, 0, 0, 0].tolist()), set(real[:, 0, 0, 0].tolist())
    assert picked_ref | picked_real == unseen and not picked_ref & picked_real
    same = ImageSet(torch.arange(8, dtype=torch.uint8).reshape(8, 1, 1, 1).expand(8, 1, 8, 8).clone(),
                    torch.full((8,), 3))
    reference, real, name = classifier_reference(train, same, record)
    assert name == "half of the test split" and len(reference) == len(real) == 4


def _quality(tmp_path, cunet_true_fd: float) -> pd.DataFrame:
    """A U-Net and a cU-Net evaluated with a DDIM sampler: classifier features of 200 samples each
    (16-d Gaussians; the U-Net's true FD 10, the cU-Net's given) against a reference, cached."""
    import math

    from missingu.stats import frechet_batch

    g = torch.Generator().manual_seed(0)
    reference = torch.randn(400, 16, generator=g)
    row = {"dataset": "digits", "sampler": "ddim10", "kind": "ddim", "fid": "not computed: x", "num_samples": 200,
           "classifier_fd_real": 0.5, "device": "cpu", "preset": "digits"}
    rows = []
    for model, true_fd in (("unet", 10.0), ("cunet", cunet_true_fd)):
        feats = torch.randn(200, 16, generator=g) + math.sqrt(true_fd / 16)
        torch.save({"samples": feats, "reference": reference}, tmp_path / f"{model}.pt")
        rows.append({**row, "model": model, "arch": model, "features": str(tmp_path / f"{model}.pt"),
                     "classifier_fd": float(frechet_batch(feats[None], reference[None])[0])})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("cunet_true_fd", "expected"), [
    (10.0, {"reproduced", "inconclusive"}), (30.0, {"not reproduced"}), (2.0, {"reproduced"}),
])
def test_comparable_quality_verdicts(tmp_path, cunet_true_fd, expected):
    claims = yaml.safe_load((ROOT / "config/paper_claims.yaml").read_text())
    table = quality_claims(_quality(tmp_path, cunet_true_fd), claims).set_index("claim_id")
    assert table.loc["comparable_quality", "verdict"] in expected
    assert table.loc["orthogonal_to_ddim", "verdict"] == table.loc["comparable_quality", "verdict"]  # a DDIM sampler
    assert table.loc["comparable_quality", "metric"] == "classifier Frechet distance, cU-Net minus U-Net (ddim10)"
    assert table.loc["comparable_quality", "setting"].startswith("stand-in: ")  # digits, the classifier distance
    assert table.loc["comparable_quality", "low"] <= table.loc["comparable_quality", "high"]
