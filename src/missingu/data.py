"""Image datasets, all delivered the same way: uint8 tensors (N, C, H, W) plus integer labels.

* ``digits`` (embedded default): scikit-learn's 1,797 handwritten 8x8 digits, shipped in the
  wheel and so available offline; resized (bilinear) to ``image_size`` (default 16).
  The train/test split is a fixed permutation (seed 0), 80/20.
* ``mnist`` (28x28, zero-padded to 32x32), ``cifar10`` (32x32), ``celeba`` (aligned
  faces, centre crop 140, resize 64) and ``lsun_church`` (church_outdoor, resize the
  short side to 64, centre crop) come from torchvision into ``<root>/<name>/``, downloaded
  when online. Missing and not downloadable, the error says which files to put where.
* ``photos``: random square crops of the eight RGB photographs that ship with scikit-image
  (:data:`PHOTOS`; offline, nothing to download), resized (antialiased) to ``image_size``
  (default 32) and flipped left-right half the time. The split is by photo: training crops
  come from six photos, test crops from the two others (:data:`PHOTOS_TEST`); the label is
  the photo's index in :data:`PHOTOS`. Crops are deterministic and spread evenly over the photos.

Models see ``x = images / 127.5 - 1`` in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from .config import ConfigError
from .io import InputFileError, load_torch, save_torch
from .specs.data import (  # noqa: F401  (re-exported: a config's dataset entry lives with the config)
    PHOTOS,
    PHOTOS_TEST,
    PHOTOS_TEST_CROPS,
    PHOTOS_TRAIN,
    PHOTOS_TRAIN_CROPS,
    SOURCES,
    DatasetSpec,
    DatasetUnavailable,
    DataSource,
    Split,
)

T = TypeVar("T")


@dataclass
class ImageSet:
    """``images``: uint8 (N, C, H, W); ``labels``: int64 (N,), ``-1`` where a dataset has none."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def to_model_range(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    """float [-1, 1] (clamped) -> uint8 [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of uint8 (N, C, H, W) to ``size`` x ``size`` (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _digits(spec: DatasetSpec, split: Split) -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float()[:, None] / 16.0  # values 0..16
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = round(len(labels) * 0.2)
    idx = order[n_test:] if split == "train" else order[:n_test]
    images = (images[idx] * 255).round().to(torch.uint8)
    return ImageSet(resize(images, spec.size), labels[idx])


_PHOTOS_SEED = {"train": 0, "test": 1}


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for a while: thousands of small resizes run faster on
    one thread than split over several, and far faster on a busy machine (the ``photos`` train
    split: about 2 s against 20-30 s on two busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _photo(name: str) -> Tensor:
    """One ``skimage.data`` photograph as uint8 (3, H, W)."""
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "stereo_motorcycle" else getattr(skimage.data, name)()
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def _photos(spec: DatasetSpec, split: Split) -> ImageSet:
    """Random crops of the split's photos: crop ``k`` comes from photo ``k % n`` (round-robin, so
    every photo gives the same number of crops and any prefix is near balanced). Each crop is a
    square of side uniform in ``[size, min(H, W) // 2]`` (several scales; a photo too small for
    ``size`` gives crops of half its short side, upsampled) at a uniform position, resized with
    antialiasing and flipped left-right with probability 1/2. A fixed seed per split, independent
    of the global random state, makes the crops the same on every call."""
    names = PHOTOS_TRAIN if split == "train" else PHOTOS_TEST
    count = PHOTOS_TRAIN_CROPS if split == "train" else PHOTOS_TEST_CROPS
    assert count % len(names) == 0, "crop counts are a multiple of the photos (exact balance)"
    size = spec.size
    draws = torch.rand(count, 4, generator=torch.Generator().manual_seed(_PHOTOS_SEED[split]), dtype=torch.float64)
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(count, dtype=torch.long)
    for j, name in enumerate(names):
        photo = _photo(name)  # decoded once; crops are views of it
        height, width = photo.shape[1:]
        hi = min(height, width) // 2
        lo = min(size, hi)
        idx = torch.arange(j, count, len(names))
        u = draws[idx]
        sides = lo + (u[:, 0] * (hi - lo + 1)).long().clamp(max=hi - lo)
        tops = (u[:, 1] * (height - sides + 1)).long().clamp(max=height - sides)
        lefts = (u[:, 2] * (width - sides + 1)).long().clamp(max=width - sides)
        flips = u[:, 3] < 0.5
        with _one_thread():
            for k, s, y, x, flip in zip(idx.tolist(), sides.tolist(), tops.tolist(), lefts.tolist(), flips.tolist()):
                crop = resize(photo[None, :, y : y + s, x : x + s], size)[0]
                images[k] = crop.flip(-1) if flip else crop
        labels[idx] = PHOTOS.index(name)
    return ImageSet(images, labels)


def _fetch(name: str, root: Path, stage: str, make: Callable[[], T]) -> T:
    """Open a torchvision dataset; the failures of a dataset that is not there (torchvision's
    RuntimeError for missing or corrupt files, URLError and other OSErrors without network,
    ImportError without lmdb) become :class:`DatasetUnavailable` saying what to stage where."""
    try:
        return make()
    except (RuntimeError, OSError, ImportError) as err:
        raise DatasetUnavailable(
            f"dataset {name!r} is not in {root} and could not be fetched ({type(err).__name__}: {err}). "
            f"On a machine with internet it downloads itself into {root}; offline, stage it by hand: {stage}"
        ) from err


def _mnist(spec: DatasetSpec, split: Split) -> ImageSet:
    from torchvision.datasets import MNIST

    root = spec.folder
    ds = _fetch(
        "mnist", root,
        f"put train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) "
        f"and t10k-labels-idx1-ubyte(.gz) from https://ossci-datasets.s3.amazonaws.com/mnist/ "
        f"into {root}/MNIST/raw/",
        lambda: MNIST(root, train=split == "train", download=spec.download),
    )
    images = F.pad(ds.data[:, None], (2, 2, 2, 2))  # 28 -> 32
    return ImageSet(resize(images, spec.size), ds.targets.long())


def _cifar10(spec: DatasetSpec, split: Split) -> ImageSet:
    from torchvision.datasets import CIFAR10

    root = spec.folder
    ds = _fetch(
        "cifar10", root,
        f"put cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
        f"into {root}/ (or its extracted folder cifar-10-batches-py/)",
        lambda: CIFAR10(root, train=split == "train", download=spec.download),
    )
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(resize(images, spec.size), torch.tensor(ds.targets, dtype=torch.long))


def _pil_to_set(ds: torch.utils.data.Dataset, name: str) -> ImageSet:
    """Decode a dataset of (PIL image -> uint8 tensor, target) pairs with a progress bar."""
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=0, collate_fn=lambda b: b)
    images = []
    for batch in tqdm(loader, desc=f"decode {name}", unit="batch"):
        images.extend(img for img, _ in batch)
    return ImageSet(torch.stack(images), torch.full((len(images),), -1, dtype=torch.long))


def _celeba(spec: DatasetSpec, split: Split) -> ImageSet:
    from torchvision import transforms
    from torchvision.datasets import CelebA

    root = spec.folder
    tf = transforms.Compose([
        transforms.CenterCrop(140), transforms.Resize(spec.size, antialias=True), transforms.PILToTensor(),
    ])
    ds = _fetch(
        "celeba", root,
        f"put img_align_celeba/ (unzipped img_align_celeba.zip), list_eval_partition.txt, "
        f"list_attr_celeba.txt, identity_CelebA.txt, list_bbox_celeba.txt and "
        f"list_landmarks_align_celeba.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
        f"into {root}/celeba/",
        lambda: CelebA(root, split=split, target_type=[], transform=tf, download=spec.download),
    )
    return _pil_to_set(ds, "celeba")


def _lsun_church(spec: DatasetSpec, split: Split) -> ImageSet:
    from torchvision import transforms
    from torchvision.datasets import LSUN

    root = spec.folder
    category = "church_outdoor_train" if split == "train" else "church_outdoor_val"
    tf = transforms.Compose([
        transforms.Resize(spec.size, antialias=True), transforms.CenterCrop(spec.size), transforms.PILToTensor(),
    ])
    ds = _fetch(
        "lsun_church", root,
        f"torchvision cannot download LSUN: get {category}_lmdb.zip with the LSUN download script "
        f"(https://github.com/fyu/lsun, `python download.py -c church_outdoor`), unzip it to "
        f"{root}/{category}_lmdb/ and `pip install lmdb`",
        lambda: LSUN(str(root), classes=[category], transform=tf),
    )
    return _pil_to_set(ds, "lsun_church")


#: The loader of each source in :data:`SOURCES`.
LOADERS: dict[str, Callable[[DatasetSpec, Split], ImageSet]] = {
    "digits": _digits, "mnist": _mnist, "cifar10": _cifar10, "celeba": _celeba, "lsun_church": _lsun_church,
    "photos": _photos,
}


def load_split(spec: DatasetSpec, split: Split = "train") -> ImageSet:
    """Read (and if allowed download) one split of ``spec``, its first ``max_images`` if set."""
    if split not in ("train", "test"):
        raise ConfigError(f"split: unknown {split!r}; allowed: test, train")
    data = LOADERS[spec.source_name](spec, split)
    if spec.max_images is not None:
        data = ImageSet(data.images[: spec.max_images], data.labels[: spec.max_images])
    return data


def save_imageset(data: ImageSet, path: str | Path, **meta: object) -> None:
    """Store a split as one file (atomic), with metadata such as the dataset name."""
    save_torch({"images": data.images, "labels": data.labels, **meta}, path)


def load_imageset(path: str | Path) -> ImageSet:
    """Read a file written by :func:`save_imageset`; a bad file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared dataset {path} does not exist (run `missingu prepare-data`)")
    what = "a prepared dataset (written by `missingu prepare-data`: uint8 'images' and 'labels')"
    blob = load_torch(path, what=what)
    images = blob.get("images") if isinstance(blob, dict) else None
    if not (isinstance(images, Tensor) and images.dtype == torch.uint8 and images.ndim == 4
            and isinstance(blob.get("labels"), Tensor)):
        raise InputFileError(f"{path} is not {what}")
    return ImageSet(images, blob["labels"])
