"""Run an exported lightning-cv model on one image with numpy, OpenCV and onnxruntime only (no torch).

    pip install numpy opencv-python-headless onnxruntime
    python onnx_predict.py model.onnx image.jpg [--out mask.png] [--size 512]

Classification prints the top classes (multi-label: the tags above their thresholds, then the top ones), box regression the square (x, y, size) in the image's pixels,
detection every box above the model's threshold (class score x_min y_min x_max y_max, after NMS), segmentation
writes the mask (0/255 for binary, class indices otherwise) at the image's size.
The model takes float32 RGB in [0, 1], NCHW; `lightning-cv export` stores its input size, class names
and task in the ONNX metadata.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort


def load(path: str) -> tuple[ort.InferenceSession, dict]:
    session = ort.InferenceSession(path, providers=ort.get_available_providers())
    meta = session.get_modelmeta().custom_metadata_map
    info = {
        "task": meta.get("task", ""),
        "class_names": json.loads(meta.get("class_names", "[]")),
        "input_size": json.loads(meta.get("input_size", "[224, 224]")),
        "dynamic_spatial": json.loads(meta.get("dynamic_spatial", "false")),
        "activation": meta.get("activation", "softmax"),
        "thresholds": json.loads(meta.get("thresholds", "null")),
        "threshold": json.loads(meta.get("threshold", "0.3")),
        "nms_iou": json.loads(meta.get("nms_iou", "0.5")),
    }
    return session, info


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"error: cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_input(image: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB -> 1CHW float32 in [0, 1] (normalisation is inside the model)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def classify(session: ort.InferenceSession, info: dict, image: np.ndarray, top: int = 5) -> None:
    height, width = info["input_size"]
    x = to_input(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    names = info["class_names"] or [str(i) for i in range(len(logits))]
    if info["activation"] == "sigmoid":  # multi-label: independent probabilities, one threshold per tag
        probs = 1 / (1 + np.exp(-logits))
        thresholds = np.asarray(info["thresholds"] if info["thresholds"] is not None else 0.5)
        print("tags: " + " ".join(n for n, on in zip(names, probs > thresholds) if on))
    else:
        probs = softmax(logits, axis=0)
    for i in np.argsort(-probs)[:top]:
        print(f"{names[i]}\t{probs[i]:.4f}")


def box(session: ort.InferenceSession, info: dict, image: np.ndarray) -> None:
    """Letterbox (longer side to the model size, padded at the bottom/right), predict, map back."""
    size = info["input_size"][0]
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    cx, cy, side = session.run(None, {session.get_inputs()[0].name: to_input(canvas)})[0][0] * size
    sx, sy = w / new_w, h / new_h
    side_px = side * max(sx, sy)
    print(f"x={cx * sx - side_px / 2:.1f} y={cy * sy - side_px / 2:.1f} size={side_px:.1f}")


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: the indices kept, best score first."""
    order, keep = list(np.argsort(-scores)), []
    while order:
        best, order = order[0], order[1:]
        keep.append(best)
        if not order:
            break
        rest = boxes[order]
        inter = (np.clip(np.minimum(rest[:, 2], boxes[best, 2]) - np.maximum(rest[:, 0], boxes[best, 0]), 0, None)
                 * np.clip(np.minimum(rest[:, 3], boxes[best, 3]) - np.maximum(rest[:, 1], boxes[best, 1]), 0, None))
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        order = [o for o, v in zip(order, inter / (area(rest) + area(boxes[best]) - inter + 1e-9)) if v <= iou]
    return keep


def detect(session: ort.InferenceSession, info: dict, image: np.ndarray) -> None:
    """Resize to the model size, predict dense outputs (box in input pixels, centre-ness logit, class logits per
    location), score sqrt(sigmoid(class) x sigmoid(centre-ness)), keep those above the threshold, NMS per class,
    scale the boxes back to the image."""
    h, w = image.shape[:2]
    height, width = info["input_size"]
    x = to_input(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    out = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    scores = np.sqrt(sigmoid(out[:, 5:]) * sigmoid(out[:, 4:5]))
    names = info["class_names"] or [str(i) for i in range(scores.shape[1])]
    found = []
    for k in range(scores.shape[1]):
        above = np.flatnonzero(scores[:, k] > info["threshold"])
        boxes = out[above, :4] * np.array([w / width, h / height] * 2)
        found += [(scores[above[i], k], names[k], boxes[i]) for i in nms(boxes, scores[above, k], info["nms_iou"])]
    print(f"boxes: {len(found)}")
    for score, name, (x0, y0, x1, y1) in sorted(found, key=lambda f: -f[0]):
        print(f"{name} {score:.4f} {x0:.1f} {y0:.1f} {x1:.1f} {y1:.1f}")


def segment(session: ort.InferenceSession, info: dict, image: np.ndarray, out: Path, size: int | None) -> None:
    """Resize to the model size (any multiple of 32 with a dynamic-size model), pad to /32, predict,
    crop the padding and resize the mask back to the image."""
    h, w = image.shape[:2]
    height, width = (size, size) if size else info["input_size"]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    pad_h, pad_w = -height % 32, -width % 32
    padded = cv2.copyMakeBorder(resized, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
    logits = session.run(None, {session.get_inputs()[0].name: to_input(padded)})[0][0, :, :height, :width]
    if logits.shape[0] == 1:
        mask = ((1 / (1 + np.exp(-logits[0]))) > 0.5).astype(np.uint8) * 255
    else:
        mask = logits.argmax(axis=0).astype(np.uint8)
    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(out), mask)
    print(f"mask {w}x{h} written to {out} (foreground share {float((mask > 0).mean()):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="ONNX file from `lightning-cv export`")
    parser.add_argument("image")
    parser.add_argument("--out", default="mask.png", help="segmentation: where to write the mask")
    parser.add_argument("--size", type=int, default=None,
                        help="segmentation: run at this square size instead of the training size")
    args = parser.parse_args()
    session, info = load(args.model)
    image = read_rgb(args.image)
    if info["task"] == "SegmentationTask" or info["dynamic_spatial"]:
        segment(session, info, image, Path(args.out), args.size)
    elif info["task"] == "BBoxCropTask":
        box(session, info, image)
    elif info["task"] == "DetectionTask":
        detect(session, info, image)
    else:
        classify(session, info, image)


if __name__ == "__main__":
    main()
