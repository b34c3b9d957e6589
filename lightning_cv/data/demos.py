"""Demo competitions: deterministic, Kaggle-like, generated offline (each task names its own).

Every task's demo writer takes (out, seed, n_train) and writes the competition's files into `out`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.progress import track

from lightning_cv.io.images import write_csv, write_image
from lightning_cv.io.masks import rle_encode

SHAPES = ("circle", "square", "triangle", "star", "cross")
# Imbalanced on purpose, as competition data is.
SHAPE_WEIGHTS = (0.34, 0.24, 0.18, 0.14, 0.10)
SEG_DEMO = {"n_train": 600, "n_test": 100, "size": (64, 64)}
# Small objects (down to 12% of the image) and more, larger occlusions keep single models below 100%, so
# the demo shows what CV, TTA and ensembles gain.
CLS_DEMO = {"n_train": 1000, "n_test": 300, "scale": (0.12, 0.4), "occlusion": 0.3, "bite": (0.25, 0.5)}


def _polygon(kind: str, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    if kind == "square":
        t = np.deg2rad(angle) + np.arange(4) * np.pi / 2 + np.pi / 4
        r = np.full(4, radius)
    elif kind == "triangle":
        t = np.deg2rad(angle) + np.arange(3) * 2 * np.pi / 3
        r = np.full(3, radius * 1.15)
    elif kind == "star":
        t = np.deg2rad(angle) + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius * 1.1, radius * 0.45)
    elif kind == "cross":
        a, b = radius, radius * 0.35
        pts = np.array([(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b), (-b, b), (-b, a)])
        rot = np.deg2rad(angle)
        rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        return (pts @ rmat.T + center).round().astype(np.int32)
    else:
        raise ValueError(kind)
    return (np.stack([np.cos(t) * r, np.sin(t) * r], axis=1) + center).round().astype(np.int32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A coloured, low-frequency textured background with stripes and noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(20, 150, size=3)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.02, 0.12, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        image[..., c] = base[c] + rng.uniform(5, 20) * np.sin(fx * xx + fy * yy + phase)
    for _ in range(rng.integers(0, 2)):  # a distracting stroke
        p1 = rng.integers(0, [width, height])
        p2 = rng.integers(0, [width, height])
        color = (base + rng.uniform(-50, 50, 3)).clip(0, 255).tolist()
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), color, 1, cv2.LINE_AA)
    return image


def _paint_object(image: np.ndarray, rng: np.random.Generator, kind: str, center: np.ndarray, radius: float,
                  background_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint one object (polygons upright, jittered) with a horizontal shading: (image, its 0/255 mask).
    Objects are lighter than their background (any hue): at least 90 grey levels above `background_level`."""
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    if kind == "circle":
        cv2.circle(mask, tuple(int(v) for v in center.round()), int(radius), 255, -1, cv2.LINE_AA)
    else:
        cv2.fillPoly(mask, [_polygon(kind, center, radius, rng.uniform(-15, 15))], 255, cv2.LINE_AA)
    mask = (mask > 127).astype(np.uint8) * 255
    color = rng.uniform(0, 255, size=3)
    shift = 90 - (color.mean() - background_level)
    if shift > 0:
        color += shift
    shading = 1 + 0.15 * np.sin(np.linspace(0, np.pi * rng.uniform(1, 3), width))[None, :, None]
    return np.where(mask[..., None] > 0, color.clip(0, 255) * shading, image), mask


def render_shape(
    rng: np.random.Generator, kind: str, height: int, width: int, scale: tuple[float, float] = (0.22, 0.4),
    occlusion: float = 0.15, bite: tuple[float, float] = (0.25, 0.4),
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """One image with one object: (RGB uint8 image, 0/255 mask of its visible pixels, square box x, y, size).
    With probability `occlusion` a background-coloured blob (radius `bite` × the object's) hides part of
    the object's edge."""
    image = _background(rng, height, width)
    side = min(height, width)
    radius = rng.uniform(*scale) * side
    margin = radius * 0.8
    center = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    background_level = image.mean(axis=(0, 1))
    image, mask = _paint_object(image, rng, kind, center, radius, float(background_level.mean()))
    if rng.random() < occlusion:
        angle = rng.uniform(0, 2 * np.pi)
        at = center + radius * np.array([np.cos(angle), np.sin(angle)])
        r = int(radius * rng.uniform(*bite))
        occluder = np.zeros_like(mask)
        cv2.circle(occluder, tuple(int(v) for v in at.round()), r, 255, -1)
        image = np.where(occluder[..., None] > 0, background_level + rng.uniform(-20, 20, 3), image)
        mask[occluder > 0] = 0
    image += rng.normal(0, rng.uniform(3, 8), image.shape)
    image = image.clip(0, 255).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    size = int(max(x1 - x0, y1 - y0))
    x = int(np.clip((x0 + x1 - size) // 2, 0, width - size))
    y = int(np.clip((y0 + y1 - size) // 2, 0, height - size))
    return image, mask, (x, y, min(size, height, width))


def make_shapes(
    out: Path, n_train: int = 1000, n_test: int = 300, size: tuple[int, int] = (64, 64), seed: int = 0,
    scale: tuple[float, float] = (0.22, 0.4), image_ext: str = ".png", occlusion: float = 0.15,
    bite: tuple[float, float] = (0.25, 0.4),
) -> None:
    """The shapes competition: train/ + train.csv (image, label, x, y, size), train_masks/ + RLE CSV,
    test/ + sample_submission.csv (image, label) and sample_submission_masks.csv (id, rle_mask), and
    the test labels kept aside in solution.csv."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, n in (("train", n_train), ("test", n_test)):
        rows, rles = [], []
        labels = rng.choice(len(SHAPES), size=n, p=SHAPE_WEIGHTS)
        for i, label in enumerate(track(labels, description=f"demo {split}", transient=True)):
            image, mask, (x, y, s) = render_shape(rng, SHAPES[label], height, width, scale, occlusion, bite)
            name = f"{split}_{i:05d}{image_ext}"
            write_image(out / split / name, image)
            write_image(out / f"{split}_masks" / f"{Path(name).stem}_mask.png", mask)
            rows.append({"image": name, "label": SHAPES[label], "x": x, "y": y, "size": s})
            rles.append({"id": Path(name).stem, "rle_mask": rle_encode(mask > 0)})
        frame = pd.DataFrame(rows)
        if split == "train":
            write_csv(frame, out / "train.csv")
            write_csv(pd.DataFrame(rles), out / "train_masks.csv")
        else:
            write_csv(frame[["image", "label"]], out / "solution.csv")
            write_csv(pd.DataFrame(rles), out / "solution_masks.csv")
            write_csv(frame[["image"]].assign(label=SHAPES[0]), out / "sample_submission.csv")
            write_csv(pd.DataFrame(rles).assign(rle_mask="1 1"), out / "sample_submission_masks.csv")  # as solution_masks.csv


def render_shapes(
    rng: np.random.Generator, kinds: list[str], height: int, width: int, scale: tuple[float, float] = (0.13, 0.2)
) -> np.ndarray:
    """One RGB uint8 image with one object of each kind, apart from each other (no overlaps), lighter than
    the textured background as in `render_shape`."""
    image = _background(rng, height, width)
    background_level = image.mean()
    side = min(height, width)
    placed: list[tuple[np.ndarray, float]] = []
    for kind in kinds:
        radius = rng.uniform(*scale) * side
        for _ in range(200):
            center = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
            if all(np.linalg.norm(center - c) > radius + r + 2 for c, r in placed):
                break
            radius *= 0.98  # crowded: a little smaller on the next try
        placed.append((center, radius))
        image, _ = _paint_object(image, rng, kind, center, radius, background_level)
    image += rng.normal(0, rng.uniform(3, 8), image.shape)
    return image.clip(0, 255).astype(np.uint8)


def make_multilabel(
    out: Path, n_train: int = 1000, n_test: int = 300, size: tuple[int, int] = (64, 64), seed: int = 0,
    image_ext: str = ".png",
) -> None:
    """The multi-label shapes competition (Planet-like): 1-3 different shapes per image, train/ +
    train.csv (image, tags: space-separated, sorted), test/ + sample_submission.csv, and the test tags
    kept aside in solution.csv."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        counts = rng.choice([1, 2, 3], size=n, p=[0.35, 0.4, 0.25])
        for i, count in enumerate(track(counts, description=f"demo {split}", transient=True)):
            kinds = sorted(SHAPES[k] for k in rng.choice(len(SHAPES), size=int(count), replace=False, p=SHAPE_WEIGHTS))
            name = f"{split}_{i:05d}{image_ext}"
            write_image(out / split / name, render_shapes(rng, kinds, height, width))
            rows.append({"image": name, "tags": " ".join(kinds)})
        frame = pd.DataFrame(rows)
        if split == "train":
            write_csv(frame, out / "train.csv")
        else:
            write_csv(frame, out / "solution.csv")
            write_csv(frame[["image"]].assign(tags=SHAPES[0]), out / "sample_submission.csv")


def make_bbox(
    out: Path, n_train: int = 400, n_test: int = 40, size: tuple[int, int] = (480, 640), seed: int = 0,
    scale: tuple[float, float] = (0.2, 0.38), image_ext: str = ".jpg",
) -> None:
    """The box-crop competition: large originals with one object each, train.csv (image, x, y, size,
    label: the object's square box in original pixels, and its shape), and unlabelled test/ images."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        labels = rng.choice(len(SHAPES), size=n, p=SHAPE_WEIGHTS)
        for i, label in enumerate(track(labels, description=f"demo {split}", transient=True)):
            image, _, (x, y, s) = render_shape(rng, SHAPES[label], height, width, scale)
            name = f"{split}_{i:05d}{image_ext}"
            write_image(out / split / name, image)
            rows.append({"image": name, "x": x, "y": y, "size": s, "label": SHAPES[label]})
        if split == "train":
            write_csv(pd.DataFrame(rows), out / "train.csv")
        else:
            write_csv(pd.DataFrame(rows), out / "solution.csv")


def make_mnist(out: Path, seed: int = 0, n_train: int | None = None) -> None:
    """scikit-learn's 1,797 real handwritten 8x8 digits, upscaled to MNIST's 28x28 (a 20x20 digit,
    centred), written as the four MNIST IDX files so the same reading code runs offline (`n_train`: the first that
    many of the 1,500 training digits)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from lightning_cv.data.mnist import IDX_FILES, write_idx

    digits = load_digits()
    small = (digits.images * (255.0 / 16.0)).astype(np.float32)
    images = np.zeros((len(small), 28, 28), np.uint8)
    for i, digit in enumerate(small):
        images[i, 4:24, 4:24] = cv2.resize(digit, (20, 20), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    train, test = train_test_split(np.arange(len(images)), test_size=297, random_state=seed, stratify=labels)
    train = train[:n_train] if n_train else train
    for kind, rows in (("train", train), ("test", test)):
        write_idx(out / f"{IDX_FILES[f'{kind}_images']}.gz", images[rows])
        write_idx(out / f"{IDX_FILES[f'{kind}_labels']}.gz", labels[rows])


# -- the demo writer of each task: (out, seed, n_train) ------------------------------------------------
def make_cls(out: Path, seed: int = 0, n_train: int | None = None) -> None:
    """The shapes competition, with small and occluded objects (classification)."""
    make_shapes(out, **{**CLS_DEMO, "n_train": n_train or CLS_DEMO["n_train"]}, seed=seed)


def make_seg(out: Path, seed: int = 0, n_train: int | None = None) -> None:
    """The shapes competition at 64 px, so `make train TASK=seg` reaches dice > 0.9 in minutes on two cores."""
    make_shapes(out, n_train=n_train or SEG_DEMO["n_train"], n_test=SEG_DEMO["n_test"], size=SEG_DEMO["size"], seed=seed)


def make_regression(out: Path, seed: int = 0, n_train: int | None = None, n_test: int = 200,
                    size: tuple[int, int] = (64, 64), image_ext: str = ".png") -> None:
    """The object-size competition (Pawpularity-like): one shape per image, the target `size` is the side
    of its bounding square in pixels; train/ + train.csv (image, size), test/ + sample_submission.csv
    (image, size: the training mean, so scoring it gives the mean predictor's error), and the test targets
    kept aside in solution.csv."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, n in (("train", n_train or 800), ("test", n_test)):
        rows = []
        labels = rng.choice(len(SHAPES), size=n, p=SHAPE_WEIGHTS)
        for i, label in enumerate(track(labels, description=f"demo {split}", transient=True)):
            image, _, (_, _, side) = render_shape(rng, SHAPES[label], height, width, scale=(0.1, 0.42), occlusion=0.0)
            name = f"{split}_{i:05d}{image_ext}"
            write_image(out / split / name, image)
            rows.append({"image": name, "size": side})
        frame = pd.DataFrame(rows)
        if split == "train":
            write_csv(frame, out / "train.csv")
            train_mean = round(float(frame["size"].mean()), 2)
        else:
            write_csv(frame, out / "solution.csv")
            write_csv(frame.assign(size=train_mean), out / "sample_submission.csv")


DEFECTS = ("1", "2", "3", "4")


def _defect(rng: np.random.Generator, kind: int, height: int, width: int) -> np.ndarray:
    """One defect's 0/1 mask on a plate: 1 pits (small discs), 2 scratches (thin slanted lines), 3 patches
    (rectangles), 4 stains (large ellipses)."""
    mask = np.zeros((height, width), np.uint8)
    if kind == 1:
        for _ in range(rng.integers(2, 6)):
            cv2.circle(mask, (int(rng.integers(4, width - 4)), int(rng.integers(4, height - 4))), int(rng.integers(2, 4)), 1, -1)
    elif kind == 2:
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(4, height - 4))
        cv2.line(mask, (x, y), (x + int(rng.integers(30, 80)), int(np.clip(y + rng.integers(-8, 9), 0, height - 1))), 1, 2)
    elif kind == 3:
        x, y = int(rng.integers(0, width - 30)), int(rng.integers(0, height - 16))
        cv2.rectangle(mask, (x, y), (x + int(rng.integers(12, 30)), y + int(rng.integers(8, 16))), 1, -1)
    else:
        center = (int(rng.integers(20, width - 20)), int(rng.integers(10, height - 10)))
        cv2.ellipse(mask, center, (int(rng.integers(12, 24)), int(rng.integers(6, 12))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def render_plate(rng: np.random.Generator, kinds: list[int], height: int, width: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A grey steel plate with a brushed texture and the given defects (masks may overlap), each darkening
    or tinting it its own way: (RGB uint8 image, {kind: 0/1 mask})."""
    base = rng.uniform(110, 160)
    texture = base + 6 * np.sin(np.linspace(0, rng.uniform(20, 60), width))[None, :] + rng.normal(0, 4, (height, width))
    image = np.repeat(texture[..., None], 3, axis=2).astype(np.float32)
    tint = {1: (-70, -70, -70), 2: (60, 60, 60), 3: (-40, 10, 30), 4: (30, -30, -50)}
    masks = {}
    for kind in kinds:
        masks[kind] = _defect(rng, kind, height, width)
        image[masks[kind] > 0] += np.asarray(tint[kind], np.float32)
    return image.clip(0, 255).astype(np.uint8), masks


def make_seg_multilabel(out: Path, seed: int = 0, n_train: int | None = None, n_test: int = 80,
                        size: tuple[int, int] = (64, 256)) -> None:
    """The steel-defect competition (Severstal-like): non-square plates with up to four overlapping defect
    kinds (about a third of the plates without any), train_images/ + train.csv `ImageId,ClassId,EncodedPixels`
    (a row per present class, column-major RLE), test_images/ + sample_submission.csv keyed `ImageId_ClassId`
    (a row per image and class), and the test masks kept aside in solution.csv (same keys)."""
    rng = np.random.default_rng(seed)
    height, width = size
    for split, n in (("train", n_train or 400), ("test", n_test)):
        rows, keys = [], []
        for i in track(range(n), description=f"demo {split}", transient=True):
            kinds = [k for k in (1, 2, 3, 4) if rng.random() < (0.0 if rng.random() < 0.3 else 0.35)]
            image, masks = render_plate(rng, kinds, height, width)
            name = f"{i:05d}{seed:x}.jpg"
            write_image(out / f"{split}_images" / name, image)
            for kind, mask in masks.items():
                rows.append({"ImageId": name, "ClassId": kind, "EncodedPixels": rle_encode(mask, "F")})
            keys += [{"ImageId_ClassId": f"{name}_{k}", "EncodedPixels": rle_encode(masks[k], "F") if k in masks else ""}
                     for k in (1, 2, 3, 4)]
        if split == "train":
            write_csv(pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]), out / "train.csv")
        else:
            write_csv(pd.DataFrame(keys), out / "solution.csv")
            write_csv(pd.DataFrame(keys).assign(EncodedPixels="1 1"), out / "sample_submission.csv")


# Detection: small images with several objects each, written as the competitions write their tables. The
# Global-Wheat-like set is a field (faint heads, leaves, blur) that keeps single models near 0.95 on its metric,
# so the demo shows what TTA and ensembles gain.
DETECTION_DEMO = {"n_train": 320, "n_test": 200, "size": (128, 128)}
DETECTION_CLASSES = ("ellipse", "square")
DETECTION_READERS = ("R1", "R2", "R3")


def render_boxes(rng: np.random.Generator, height: int, width: int, kinds: tuple[str, ...] = ("ellipse",),
                 mean_objects: float = 3.0, scale: tuple[float, float] = (0.07, 0.16), field: bool = False
                 ) -> tuple[np.ndarray, list[tuple]]:
    """One image with a Poisson number of light objects (wheat-head-like ellipses, or squares) on a textured
    background, two objects' boxes overlapping by at most 30% of the smaller one's width and height: (RGB uint8,
    [(x_min, y_min, x_max, y_max, kind index)] of their pixels, a covered object's whole box).

    `field` makes it a wheat field as Global Wheat photographs it: more heads, grain-striped, some faint against
    the canopy; thin leaves as light as heads, which are not boxed; some images out of focus."""
    image = _background(rng, height, width)
    level = float(image.mean())
    boxes: list[tuple] = []
    for _ in range(min(int(rng.poisson(mean_objects)), 14 if field else 10)):
        kind = int(rng.integers(len(kinds)))
        half = rng.uniform(*scale, size=2) * min(height, width)
        if kinds[kind] == "ellipse":
            half[1] = half[0] * rng.uniform(0.45, 0.7)  # elongated, like a wheat head
        center = rng.uniform(half.max(), [width - half.max(), height - half.max()])
        box = (*(center - half), *(center + half))
        if any(min(box[2], b[2]) - max(box[0], b[0]) > 0.3 * min(box[2] - box[0], b[2] - b[0])
               and min(box[3], b[3]) - max(box[1], b[1]) > 0.3 * min(box[3] - box[1], b[3] - b[1]) for b in boxes):
            continue
        mask = np.zeros((height, width), np.uint8)
        angle = rng.uniform(-30, 30) if kinds[kind] == "ellipse" else 0.0
        if kinds[kind] == "ellipse":
            cv2.ellipse(mask, tuple(int(v) for v in center.round()), tuple(int(v) for v in half.round()), angle, 0, 360, 255, -1)
        else:
            cv2.rectangle(mask, tuple(int(v) for v in (center - half).round()), tuple(int(v) for v in (center + half).round()), 255, -1)
        color = rng.uniform(0, 255, size=3)
        color += max(0.0, (rng.uniform(25, 90) if field else 90) - (color.mean() - level))
        paint = color.clip(0, 255)
        if field:  # grains across the head
            yy, xx = np.mgrid[0:height, 0:width]
            along = (xx - center[0]) * np.cos(np.radians(angle)) + (yy - center[1]) * np.sin(np.radians(angle))
            paint = paint * (1 + 0.12 * np.sin(along * 2 * np.pi / rng.uniform(3, 5)))[..., None]
        image = np.where(mask[..., None] > 0, paint, image)
        ys, xs = np.nonzero(mask)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, kind))
    if field:
        for _ in range(int(rng.integers(1, 5))):  # leaves: long, thin and as light as a head
            half = (rng.uniform(0.15, 0.35) * min(height, width), rng.uniform(1, 2.5))
            center = rng.uniform(0, [width, height])
            color = (rng.uniform(0, 255, size=3) + rng.uniform(20, 80)).clip(0, 255).tolist()
            cv2.ellipse(image, tuple(int(v) for v in center.round()), tuple(int(round(v)) for v in half),
                        rng.uniform(0, 180), 0, 360, color, -1, cv2.LINE_AA)
        if rng.random() < 0.3:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.6, 1.3))
    image += rng.normal(0, rng.uniform(3, 8), image.shape)
    return image.clip(0, 255).astype(np.uint8), boxes


def _wheat_rows(name: str, boxes: list[tuple], height: int, width: int) -> list[dict]:
    return [{"image_id": name, "width": width, "height": height, "bbox": f"[{x0}.0, {y0}.0, {x1 - x0}.0, {y1 - y0}.0]",
             "source": "demo"} for x0, y0, x1, y1, _ in boxes]


def _reader_rows(rng: np.random.Generator, name: str, boxes: list[tuple], no_finding: int) -> list[dict]:
    """VinBigData's rows: each reader boxes each object (jittered by a pixel or two, one in ten missed); an image
    without a finding gets a "No finding" row per reader, with empty coordinates."""
    rows = []
    for reader in DETECTION_READERS:
        seen = [b for b in boxes if rng.random() > 0.1]
        for x0, y0, x1, y1, kind in seen:
            jitter = rng.integers(-2, 3, size=4)
            rows.append({"image_id": name, "class_name": DETECTION_CLASSES[kind], "class_id": kind, "rad_id": reader,
                         "x_min": max(0, x0 + jitter[0]), "y_min": max(0, y0 + jitter[1]),
                         "x_max": x1 + jitter[2], "y_max": y1 + jitter[3]})
        if not boxes:
            rows.append({"image_id": name, "class_name": "No finding", "class_id": no_finding, "rad_id": reader,
                         "x_min": "", "y_min": "", "x_max": "", "y_max": ""})
    return rows


def make_detection(out: Path, seed: int = 0, n_train: int = DETECTION_DEMO["n_train"], n_test: int = DETECTION_DEMO["n_test"],
                   size: tuple[int, int] = DETECTION_DEMO["size"], multiclass: bool | None = None) -> None:
    """The detection competitions: Global-Wheat-like (train.csv image_id, width, height, bbox "[x, y, w, h]", source;
    an image without heads has no row; `conf x y w h` prediction strings) in `out`, and a VinBigData-like
    multi-class set beside it in `<out>-multiclass` (x_min..y_max, class_name, class_id, three readers' rad_id,
    "No finding" rows; `class conf x_min y_min x_max y_max`, "2 1 0 0 1 1" for no finding; a folder of its own, so
    `lightning-cv init` reads each alone). Each has test/, an empty sample_submission.csv and solution.csv (the true
    boxes as prediction strings of confidence 1). `multiclass` True or False writes only that set, into `out`."""
    height, width = size
    for multi in ((False, True) if multiclass is None else (multiclass,)):
        folder = out.with_name(f"{out.name}-multiclass") if multiclass is None and multi else out
        rng = np.random.default_rng(seed + 17 * multi)
        kinds = DETECTION_CLASSES if multi else DETECTION_CLASSES[:1]
        no_finding = len(kinds)
        for split, n in (("train", n_train), ("test", n_test)):
            rows, solution = [], []
            for i in track(range(n), description=f"demo {split}", transient=True):
                name = f"{('u' if multi else 't') if split == 'test' else ('v' if multi else 'w')}{i:05d}"
                image, boxes = render_boxes(rng, height, width, kinds, mean_objects=2.5 if multi else 6.0, field=not multi)
                write_image(folder / split / f"{name}.jpg", image)
                if split == "train":
                    rows += _reader_rows(rng, name, boxes, no_finding) if multi else _wheat_rows(name, boxes, height, width)
                elif multi:
                    truth = " ".join(f"{k} 1.0 {x0} {y0} {x1} {y1}" for x0, y0, x1, y1, k in boxes)
                    solution.append({"image_id": name, "PredictionString": truth or f"{no_finding} 1.0 0 0 1 1"})
                else:
                    truth = " ".join(f"1.0 {x0} {y0} {x1 - x0} {y1 - y0}" for x0, y0, x1, y1, _ in boxes)
                    solution.append({"image_id": name, "PredictionString": truth})
            if split == "train":
                write_csv(pd.DataFrame(rows), folder / "train.csv")
            else:
                write_csv(pd.DataFrame(solution), folder / "solution.csv")
                write_csv(pd.DataFrame(solution).assign(PredictionString=""), folder / "sample_submission.csv")
