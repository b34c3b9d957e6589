"""Small replicas of competition layouts, in each competition's own shape, made from the demos' shapes and plates;
`LAYOUTS` names each by the folder the recipe pages give it (`data/<name>`). Each writes the competition's files
and `solution.csv`, the answers Kaggle keeps, to score the replica.

- TGS Salt: `train/images/<id>.png` grey, `train/masks/<id>.png` (same name), `train.csv` `id,rle_mask`
  column-major; `test/images/`; `sample_submission.csv` `id,rle_mask`; the answers in `solution.csv`.
- Carvana: `train/<car>_<view>.jpg`, `train_masks/<car>_<view>_mask.gif`, `train_masks.csv` `img,rle_mask`
  row-major keyed by file name; `test/`; `sample_submission.csv` `img,rle_mask`; `solution.csv`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from lightning_cv.data.demos import (
    DEFECTS,
    SHAPES,
    make_seg_multilabel,
    make_shapes,
    render_shape,
    render_shapes,
)
from lightning_cv.io.images import read_mask, write_image
from lightning_cv.io.masks import rle_decode, rle_encode


def _shapes(root: Path, n_train: int, n_test: int, size: tuple[int, int], seed: int) -> Path:
    source = root / "shapes"
    make_shapes(source, n_train=n_train, n_test=n_test, size=size, seed=seed)
    return source


def make_tgs(root: Path, n_train: int = 24, n_test: int = 6, seed: int = 3) -> Path:
    """A TGS-Salt-like folder of 101x101 grey images (column-major RLE) at `root`."""
    source = _shapes(root.parent / f"{root.name}-source", n_train, n_test, (101, 101), seed)
    for split in ("train", "test"):
        rows = []
        for image in sorted((source / split).glob("*.png")):
            grey = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2GRAY)
            ident = f"{image.stem.split('_')[1]}a{seed}"  # TGS ids are hex-like stems
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / "images" / f"{ident}.png"), grey)
            mask = (read_mask(source / f"{split}_masks" / f"{image.stem}_mask.png") > 0).astype(np.uint8)
            if split == "train":
                (root / split / "masks").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / split / "masks" / f"{ident}.png"), mask * 255)
            rows.append({"id": ident, "rle_mask": rle_encode(mask, "F")})
        frame = pd.DataFrame(rows)
        if split == "train":
            frame.to_csv(root / "train.csv", index=False)
        else:
            frame.to_csv(root / "solution.csv", index=False)
            frame.assign(rle_mask="").to_csv(root / "sample_submission.csv", index=False)
    shutil.rmtree(source.parent)
    return root


def make_carvana(root: Path, cars: int = 8, views: int = 4, n_test: int = 6, seed: int = 5) -> Path:
    """A Carvana-like folder at `root`: `views` JPEG views per car, GIF masks, row-major RLE by file name."""
    source = _shapes(root.parent / f"{root.name}-source", cars * views, n_test, (48, 72), seed)
    for split in ("train", "test"):
        rows = []
        for i, image in enumerate(sorted((source / split).glob("*.png"))):
            name = f"car{i // views:03d}_{i % views + 1:02d}" if split == "train" else f"test{i:03d}_01"
            (root / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / f"{name}.jpg"), cv2.imread(str(image)), [cv2.IMWRITE_JPEG_QUALITY, 95])
            mask = (read_mask(source / f"{split}_masks" / f"{image.stem}_mask.png") > 0).astype(np.uint8)
            if split == "train":
                (root / "train_masks").mkdir(exist_ok=True)
                Image.fromarray(mask).save(root / "train_masks" / f"{name}_mask.gif")
            rows.append({"img": f"{name}.jpg", "rle_mask": rle_encode(mask)})
        frame = pd.DataFrame(rows)
        if split == "train":
            frame.to_csv(root / "train_masks.csv", index=False)
        else:
            frame.to_csv(root / "solution.csv", index=False)
            frame.assign(rle_mask="").to_csv(root / "sample_submission.csv", index=False)
    shutil.rmtree(source.parent)
    return root


# -- the shapes, drawn to order --------------------------------------------------------------------------------
def _kinds(n: int, classes: int, rng: np.random.Generator) -> list[int]:
    """`n` class indices, every class at least 3 times (a 3-fold split and a stratified hold-out), shuffled."""
    kinds = [i % classes for i in range(n)]
    rng.shuffle(kinds)
    return kinds


def _render(kind: int, size: tuple[int, int], rng: np.random.Generator, scale=(0.22, 0.4)):
    """(RGB image, 0/1 mask, square box x, y, side) of one shape of the demo's kind index."""
    image, mask, box = render_shape(rng, SHAPES[kind], *size, scale=scale, occlusion=0.0)
    return image, (mask > 0).astype(np.uint8), box


def _tables(root: Path, train: pd.DataFrame, answers: pd.DataFrame, sample: pd.DataFrame, test: pd.DataFrame | None = None,
            train_name: str = "train.csv", sample_name: str = "sample_submission.csv") -> None:
    """The competition's tables: the training labels, the sample submission, the test list when it ships one, and
    the answers Kaggle keeps (`solution.csv`, for scoring the replica)."""
    train.to_csv(root / train_name, index=False)
    sample.to_csv(root / sample_name, index=False)
    answers.to_csv(root / "solution.csv", index=False)
    if test is not None:
        test.to_csv(root / "test.csv", index=False)


# -- segmentation -----------------------------------------------------------------------------------------------
def make_severstal(root: Path, n_train: int = 20, n_test: int = 4, seed: int = 2, first_release: bool = False) -> Path:
    """A Severstal-like folder: `train_images/`, `test_images/` (steel plates, four defect classes), `train.csv`
    `ImageId,ClassId,EncodedPixels` (a row per present class, column-major) or, as first released,
    `ImageId_ClassId,EncodedPixels` (4 rows per image, empty when absent); `sample_submission.csv` keyed
    `ImageId_ClassId`."""
    make_seg_multilabel(root, seed=seed, n_train=n_train, n_test=n_test, size=(32, 128))
    if first_release:
        long = pd.read_csv(root / "train.csv", dtype=str)
        rles = {(i, c): r for i, c, r in long.itertuples(index=False)}
        images = sorted(p.name for p in (root / "train_images").iterdir())
        rows = [{"ImageId_ClassId": f"{i}_{c}", "EncodedPixels": rles.get((i, c), "")} for i in images for c in DEFECTS]
        pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


CLOUDS = ("Fish", "Flower", "Gravel", "Sugar")


def make_clouds(root: Path, n_train: int = 20, n_test: int = 4, seed: int = 4) -> Path:
    """An Understanding-Clouds-like folder: `train_images/`, `test_images/` (2:3 images), `train.csv`
    `Image_Label,EncodedPixels` keyed `<file>_<label>` (4 rows per image, empty when absent, column-major at the
    image's size); `sample_submission.csv` with the same keys, its masks at a quarter of each side (as 350x525
    is of 1400x2100)."""
    make_seg_multilabel(root, seed=seed, n_train=n_train, n_test=n_test, size=(64, 96))
    long = pd.read_csv(root / "train.csv", dtype=str)
    rles = {(i, c): r for i, c, r in long.itertuples(index=False)}
    images = sorted(p.name for p in (root / "train_images").iterdir())
    rows = [{"Image_Label": f"{i}_{label}", "EncodedPixels": rles.get((i, c), "")} for i in images
            for c, label in zip(DEFECTS, CLOUDS)]
    answers = pd.read_csv(root / "solution.csv", dtype=str, keep_default_na=False)
    quarter = []
    for key, rle in answers.itertuples(index=False):
        image, _, c = key.rpartition("_")
        mask = cv2.resize(rle_decode(rle, (64, 96), "F"), (24, 16), interpolation=cv2.INTER_NEAREST)
        quarter.append({"Image_Label": f"{image}_{CLOUDS[DEFECTS.index(c)]}", "EncodedPixels": rle_encode(mask, "F")})
    answers = pd.DataFrame(quarter)
    _tables(root, pd.DataFrame(rows), answers, answers.assign(EncodedPixels="1 1"))
    return root


def _ships(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A sea image with 0-3 ships (bright rotated rectangles, apart): (RGB image, a 0/1 mask per ship)."""
    sea = rng.normal(0, 6, (size, size, 1)) + rng.uniform(30, 70, 3)
    taken = np.zeros((size, size), np.uint8)
    ships = []
    for _ in range(rng.integers(0, 4)):
        centre = rng.uniform(size * 0.2, size * 0.8, 2)
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(rng.uniform(8, 14)), float(rng.uniform(3, 5))),
                             float(rng.uniform(0, 180)))).round().astype(np.int32)
        mask = cv2.fillPoly(np.zeros((size, size), np.uint8), [box], 1)
        if (cv2.dilate(taken, np.ones((5, 5), np.uint8)) & mask).any():
            continue  # touching ships would be one instance
        taken |= mask
        ships.append(mask)
        sea[mask > 0] = rng.uniform(170, 230)
    return sea.clip(0, 255).astype(np.uint8), ships


def make_airbus(root: Path, n_train: int = 24, n_test: int = 6, size: int = 48, seed: int = 6) -> Path:
    """An Airbus-ships-like folder: `train_v2/`, `test_v2/`, `train_ship_segmentations_v2.csv` `ImageId,EncodedPixels`
    with a row per ship (column-major) and one empty row for an image without ships; `sample_submission_v2.csv`."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for _ in range(n):
            name = f"{rng.integers(16**8):08x}.jpg"
            image, ships = _ships(rng, size)
            write_image(root / f"{split}_v2" / name, image)
            rows += [{"ImageId": name, "EncodedPixels": rle_encode(s, "F")} for s in ships] or [{"ImageId": name, "EncodedPixels": ""}]
        frame = pd.DataFrame(rows)
        if split == "train":
            frame.to_csv(root / "train_ship_segmentations_v2.csv", index=False)
        else:
            frame.to_csv(root / "solution.csv", index=False)
            frame.drop_duplicates("ImageId").assign(EncodedPixels="").to_csv(root / "sample_submission_v2.csv", index=False)
    return root


# -- classification and regression ------------------------------------------------------------------------------
def make_isic(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 7) -> Path:
    """A SIIM-ISIC-like folder: `train/<image_name>.jpg`, `train.csv` (image_name, patient_id, … , target: 1 for
    a circle), `test/`, `test.csv`, `sample_submission.csv` `image_name,target`."""
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i, kind in enumerate(_kinds(n, 3, rng)):
            name = f"ISIC_{seed}{split[:2]}{i:04d}"
            image, _, _ = _render(kind, (40, 40), rng)
            write_image(root / split / f"{name}.jpg", image)
            rows.append({"image_name": name, "patient_id": f"IP_{i // 3:04d}{split[:2]}", "sex": "female",
                         "age_approx": 45.0, "anatom_site_general_challenge": "torso",
                         "diagnosis": "melanoma" if kind == 0 else "nevus",
                         "benign_malignant": "malignant" if kind == 0 else "benign", "target": int(kind == 0)})
        frames[split] = pd.DataFrame(rows)
    test = frames["test"]
    _tables(root, frames["train"], test[["image_name", "target"]], test[["image_name"]].assign(target=0),
            test=test.drop(columns=["diagnosis", "benign_malignant", "target"]))
    return root


PLANT = ("healthy", "multiple_diseases", "rust", "scab")


def make_plant_pathology(root: Path, n_train: int = 24, n_test: int = 6, seed: int = 8) -> Path:
    """A Plant-Pathology-2020-like folder: `images/Train_<n>.jpg` and `images/Test_<n>.jpg` together, `train.csv`
    `image_id,healthy,multiple_diseases,rust,scab` (one-hot), `test.csv`, `sample_submission.csv` (the four columns)."""
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("Train", n_train), ("Test", n_test)):
        rows = []
        for i, kind in enumerate(_kinds(n, len(PLANT), rng)):
            write_image(root / "images" / f"{split}_{i}.jpg", _render(kind, (40, 40), rng)[0])
            rows.append({"image_id": f"{split}_{i}", **{c: int(j == kind) for j, c in enumerate(PLANT)}})
        frames[split] = pd.DataFrame(rows)
    test = frames["Test"]
    _tables(root, frames["Train"], test, test.assign(**dict.fromkeys(PLANT, 0.25)), test=test[["image_id"]])
    return root


def make_aptos(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 9) -> Path:
    """An APTOS-2019-like folder: `train_images/<id_code>.png`, `train.csv` `id_code,diagnosis` (grades 0-4: the
    shape's kind), `test_images/`, `test.csv`, `sample_submission.csv` `id_code,diagnosis`."""
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for kind in _kinds(n, 5, rng):
            code = f"{rng.integers(16**12):012x}"
            write_image(root / f"{split}_images" / f"{code}.png", _render(kind, (40, 40), rng)[0])
            rows.append({"id_code": code, "diagnosis": kind})
        frames[split] = pd.DataFrame(rows)
    test = frames["test"]
    _tables(root, frames["train"], test, test.assign(diagnosis=0), test=test[["id_code"]])
    return root


def make_petfinder(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 10) -> Path:
    """A PetFinder-Pawpularity-like folder: `train/<Id>.jpg`, `train.csv` `Id,<12 flags>,Pawpularity` (1-100: the
    shape's size), `test/`, `test.csv` (Id and flags), `sample_submission.csv` `Id,Pawpularity`."""
    flags = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage", "Human", "Occlusion",
             "Info", "Blur"]
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for kind in _kinds(n, 5, rng):
            ident = f"{rng.integers(16**12):012x}{len(rows):04x}"
            image, _, (_, _, side) = _render(kind, (48, 48), rng, scale=(0.1, 0.45))
            write_image(root / split / f"{ident}.jpg", image)
            rows.append({"Id": ident, **{f: int(rng.integers(2)) for f in flags}, "Pawpularity": round(side / 48 * 100)})
        frames[split] = pd.DataFrame(rows)
    test = frames["test"]
    _tables(root, frames["train"], test[["Id", "Pawpularity"]], test[["Id"]].assign(Pawpularity=38.0),
            test=test.drop(columns="Pawpularity"))
    return root


HPA_CLASSES = {"circle": "0", "square": "16", "star": "25"}
HPA_CHANNELS = ("red", "green", "blue", "yellow")


def make_hpa(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 11) -> Path:
    """A Human-Protein-Atlas-like folder: four grey PNGs per image, `train/<Id>_red.png`, `_green`, `_blue`,
    `_yellow`; `train.csv` `Id,Target` (space-separated class numbers); `test/`; `sample_submission.csv` `Id,Predicted`."""
    rng = np.random.default_rng(seed)
    kinds = list(HPA_CLASSES)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            tags = sorted(rng.choice(kinds, size=1 + i % 2, replace=False).tolist())
            ident = f"{rng.integers(16**8):08x}-{split}"
            rgb = render_shapes(rng, tags, 40, 40)
            for c, channel in enumerate(HPA_CHANNELS):
                grey = rgb[..., c] if c < 3 else rgb[..., :2].mean(axis=2).astype(np.uint8)
                write_image(root / split / f"{ident}_{channel}.png", grey)
            rows.append({"Id": ident, "Target": " ".join(sorted((HPA_CLASSES[t] for t in tags), key=int))})
        frames[split] = pd.DataFrame(rows)
    test = frames["test"].rename(columns={"Target": "Predicted"})
    _tables(root, frames["train"], test, test.assign(Predicted="0"))
    return root


def make_rsna(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 12) -> Path:
    """An RSNA-Pneumonia-like folder of DICOM files: `stage_2_train_images/<patientId>.dcm` (12-bit, a rescale
    intercept, every third one MONOCHROME1), `stage_2_train_labels.csv` `patientId,x,y,width,height,Target` (a row
    per opacity box, one row with empty coordinates and Target 0 for a clear image), `stage_2_test_images/`,
    `stage_2_sample_submission.csv` `patientId,PredictionString`."""
    from dicoms import write_dicom

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            patient = f"{rng.integers(16**8):08x}-{split}-{i:03d}"
            stored = np.linspace(300, 1800, 40)[None, :] + rng.normal(0, 120, (40, 40))
            boxes = []
            for _ in range(i % 3):  # 0, 1 or 2 opacities
                x, y = (int(v) for v in rng.integers(4, 24, 2))
                stored[y : y + 12, x : x + 12] += 1800
                boxes.append((x, y, 12, 12))
            stored = np.clip(stored, 0, 4095).astype(np.uint16)
            stored[0, 0] = 4095
            path = root / f"stage_2_{split}_images" / f"{patient}.dcm"
            if i % 3 == 0:
                write_dicom(path, 4095 - stored, monochrome1=True, window=(-1024 + 2047, 4000))
            else:
                write_dicom(path, stored, intercept=-1024.0, window=(0, 4000))
            rows += [{"patientId": patient, "x": x, "y": y, "width": w, "height": h, "Target": 1} for x, y, w, h in boxes] or [
                {"patientId": patient, "x": None, "y": None, "width": None, "height": None, "Target": 0}]
        frame = pd.DataFrame(rows)
        if split == "train":
            frame.to_csv(root / "stage_2_train_labels.csv", index=False)
        else:
            ids = frame.drop_duplicates("patientId")[["patientId"]]
            ids.assign(PredictionString="0.5 0 0 100 100").to_csv(root / "stage_2_sample_submission.csv", index=False)
    return root


CERVIX = ("Type_1", "Type_2", "Type_3")


def make_cervix(root: Path, n_train: int = 24, n_test: int = 6, seed: int = 13) -> Path:
    """A crop-then-classify folder (cervix screening style): large `train/<n>.jpg` originals with one object,
    `train.csv` `image,label` (Type_1-3), `boxes.csv` `image,x,y,size` (hand-drawn squares), `test/`,
    `sample_submission.csv` `image_name,Type_1,Type_2,Type_3`."""
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i, kind in enumerate(_kinds(n, len(CERVIX), rng)):
            image, _, (x, y, side) = _render(kind, (96, 128), rng, scale=(0.2, 0.35))
            name = f"{i + (0 if split == 'train' else 1000)}.jpg"
            write_image(root / split / name, image)
            rows.append({"image": name, "label": CERVIX[kind], "x": x, "y": y, "size": side})
        frames[split] = pd.DataFrame(rows)
    train, test = frames["train"], frames["test"]
    train[["image", "x", "y", "size"]].to_csv(root / "boxes.csv", index=False)
    answers = pd.DataFrame({"image_name": test["image"], **{c: (test["label"] == c).astype(int) for c in CERVIX}})
    _tables(root, train[["image", "label"]], answers, answers.assign(**dict.fromkeys(CERVIX, 1 / 3)))
    return root


def make_global_wheat(root: Path, n_train: int = 24, n_test: int = 6, seed: int = 15) -> Path:
    """A Global-Wheat-like folder (the demo's shape, which is the competition's): `train/<image_id>.jpg`,
    `train.csv` `image_id,width,height,bbox,source` (`bbox` "[x, y, w, h]"; an image without heads has no row),
    `test/`, `sample_submission.csv` `image_id,PredictionString`, and the answers in `solution.csv`."""
    from lightning_cv.data.demos import make_detection

    make_detection(root, seed=seed, n_train=n_train, n_test=n_test, size=(64, 64), multiclass=False)
    return root


def make_vinbigdata(root: Path, n_train: int = 24, n_test: int = 6, seed: int = 16) -> Path:
    """A VinBigData-like folder: `train/<image_id>.dicom` (12-bit, MONOCHROME2), `train.csv` `image_id,class_name,
    class_id,rad_id,x_min,y_min,x_max,y_max` (three readers box each finding; "No finding" rows, class 2 here, with
    empty coordinates), `test/`, `sample_submission.csv` `image_id,PredictionString` ("2 1 0 0 1 1"), and the
    answers in `solution.csv`."""
    from dicoms import write_dicom

    from lightning_cv.data.demos import make_detection
    from lightning_cv.io.images import read_image

    make_detection(root, seed=seed, n_train=n_train, n_test=n_test, size=(64, 64), multiclass=True)
    for jpg in sorted(root.glob("t*/*.jpg")):
        grey = read_image(jpg).mean(axis=2) * 16  # 8 bits to 12
        write_dicom(jpg.with_suffix(".dicom"), grey.clip(0, 4095).astype(np.uint16), window=(2048, 4096))
        jpg.unlink()
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
    sample.assign(PredictionString="2 1 0 0 1 1").to_csv(root / "sample_submission.csv", index=False)
    return root


# The replicas by the folder name a recipe page gives them (`data/<name>`).
def make_hubmap(root: Path, seed: int = 14) -> Path:
    """A HuBMAP-kidney-like folder: tiled TIFFs in `train/` and `test/`, `train.csv` `id,encoding` (column-major
    RLE of the glomeruli), `sample_submission.csv` `id,predicted`, and the answers in `solution.csv`."""
    from lightning_cv.data.slides import make_slides

    make_slides(root, seed=seed, n_train=4, n_test=2, train_size=(256, 384), test_size=(256, 320), per_mpx=150)
    return root


LAYOUTS = {
    "carvana": make_carvana, "tgs": make_tgs, "severstal": make_severstal,
    "severstal-first": lambda root: make_severstal(root, first_release=True), "clouds": make_clouds,
    "airbus": make_airbus, "isic": make_isic, "plant-pathology": make_plant_pathology, "aptos": make_aptos,
    "petfinder": make_petfinder, "hpa": make_hpa, "rsna": make_rsna, "cervix": make_cervix, "hubmap": make_hubmap,
    "global-wheat": make_global_wheat, "vinbigdata": make_vinbigdata,
}
