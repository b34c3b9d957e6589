"""Boxes as Kaggle prediction strings, and back.

Styles: "conf_xywh" (Global Wheat: "0.9000 12 30 40 50 ...", an empty string for an image without a box) and
"class_conf_xyxy" (VinBigData: "class conf x_min y_min x_max y_max ...", the no-finding token "14 1 0 0 1 1" for an
image without a box). Boxes are written highest score first, corners rounded to `decimals` (whole pixels by default,
as the kernels write them; their `astype(np.int32)` truncates instead). Rounding moves a corner up to half a pixel,
which a small box feels at IoU 0.75: submissions keep a decimal (`--data.box_decimals`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError
from lightning_cv.io.box_tables import box_arrays, empty_boxes
from lightning_cv.predictions.box_fusion import Pred

BoxStyle = Literal["conf_xywh", "class_conf_xyxy"]
STYLE_WIDTH = {"conf_xywh": 5, "class_conf_xyxy": 6}
# What VinBigData's evaluation reads as "no finding": class, confidence 1 and the box (0, 0, 1, 1).
NO_FINDING_BOX = "1 0 0 1 1"


def number(value: float, decimals: int) -> str:
    """`value` with up to `decimals` decimals, trailing zeros dropped ("12", not "12.0"; "12.5")."""
    text = f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0"
    return text.rstrip("0").rstrip(".") if "." in text else text


def check_style(style: str) -> None:
    if style not in STYLE_WIDTH:
        raise ValueError(f"unknown box string style {style!r}; choose conf_xywh or class_conf_xyxy")


def encode(pred: Pred, style: BoxStyle, no_finding: str | None = None, decimals: int = 0, score_decimals: int = 4,
           classes: Sequence[str] | None = None) -> str:
    """One image's boxes as a prediction string, highest score first.

    `decimals` for the coordinates (0: whole pixels), `score_decimals` for the confidence; `classes` names the
    label indices in class_conf_xyxy (VinBigData's class ids), else the index is written. An image without a box
    is "" (conf_xywh), or the `no_finding` token "<no_finding> 1 0 0 1 1" when `no_finding` is given.
    """
    check_style(style)
    p = box_arrays(pred)
    order = np.argsort(-p["scores"], kind="stable")
    tokens = []
    for box, label, score in zip(p["boxes"][order], p["labels"][order], p["scores"][order]):
        x0, y0, x1, y1 = (round(float(v), decimals) for v in box)
        conf = f"{float(score):.{score_decimals}f}"
        if style == "conf_xywh":
            coords = (x0, y0, round(x1 - x0, decimals), round(y1 - y0, decimals))
            tokens.append(" ".join([conf, *(number(v, decimals) for v in coords)]))
        else:
            name = str(classes[int(label)]) if classes is not None else str(int(label))
            tokens.append(" ".join([name, conf, *(number(v, decimals) for v in (x0, y0, x1, y1))]))
    if not tokens and no_finding is not None:
        return f"{no_finding} {NO_FINDING_BOX}"
    return " ".join(tokens)


def is_empty(text: Any) -> bool:
    return text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip()


def decode(text: Any, style: BoxStyle, no_finding: str | None = None,
           classes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A prediction string -> {"boxes" xyxy, "labels", "scores"}; NaN or "" is an image without a box, and so is
    the `no_finding` token (its groups are dropped). `classes` maps class names to indices (else they are integers).
    """
    check_style(style)
    empty = empty_boxes(scores=True)
    if is_empty(text):
        return empty
    tokens = str(text).split()
    width = STYLE_WIDTH[style]
    if len(tokens) % width:
        raise DataError(f"prediction string of {len(tokens)} values is not groups of {width} ({style}): {str(text)[:60]!r}")
    groups = [tokens[i:i + width] for i in range(0, len(tokens), width)]
    if style == "class_conf_xyxy" and no_finding is not None:
        groups = [g for g in groups if g[0] != str(no_finding)]
    if not groups:
        return empty
    index = {str(c): i for i, c in enumerate(classes)} if classes is not None else None
    labels = []
    for g in groups:
        if style == "conf_xywh":
            labels.append(0)
        elif index is not None:
            if g[0] not in index:
                raise DataError(f"prediction string names class {g[0]!r}; known classes are {list(index)}")
            labels.append(index[g[0]])
        else:
            labels.append(int(float(g[0])))
    try:
        values = np.array([g[width - 5:] for g in groups], np.float64)
    except ValueError:
        raise DataError(f"prediction string holds a value that is not a number: {str(text)[:60]!r}") from None
    boxes = values[:, 1:].copy()
    if style == "conf_xywh":
        boxes[:, 2:] += boxes[:, :2]
    return {"boxes": boxes.astype(np.float32), "labels": np.array(labels, np.int64), "scores": values[:, 0].astype(np.float32)}


def long_rows(ids: Sequence[str], preds: Sequence[Pred]) -> pd.DataFrame:
    """A row per box: image_id, label, score, x_min, y_min, x_max, y_max (an image without a box has no row)."""
    parts = []
    for image_id, pred in zip(ids, preds, strict=True):
        p = box_arrays(pred)
        part = pd.DataFrame(p["boxes"], columns=["x_min", "y_min", "x_max", "y_max"])
        part.insert(0, "score", p["scores"])
        part.insert(0, "label", p["labels"])
        part.insert(0, "image_id", str(image_id))
        parts.append(part)
    columns = ["image_id", "label", "score", "x_min", "y_min", "x_max", "y_max"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def prediction_strings(ids: Sequence[str], preds: Sequence[Pred], style: BoxStyle, no_finding: str | None = None,
                       classes: Sequence[str] | None = None, id_col: str = "image_id",
                       string_col: str = "PredictionString", decimals: int = 0) -> pd.DataFrame:
    """A submission frame: one row per image, its boxes `encode`d (corners with `decimals`)."""
    return pd.DataFrame({id_col: [str(i) for i in ids],
                         string_col: [encode(p, style, no_finding, decimals, classes=classes) for p in preds]})
