"""Post-processing of masks tuned on out-of-fold predictions: per class, the probability threshold and the
minimum area (a mask with fewer pixels above the threshold is emptied) that maximise the mean Dice over
image x class pairs (an empty truth predicted empty scores 1), searched on pixel counts read a chunk of
images at a time. Binary masks are the one-class case (Carvana, TGS, SIIM-ACR); Severstal and Clouds the
multi-class one."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from lightning_cv.predictions.stores import array_chunks, chunk_rows


def counted_dice(above: np.ndarray, inter: np.ndarray, truth: np.ndarray, min_area: Any = 0,
                 sizes: np.ndarray | None = None) -> np.ndarray:
    """Pair Dice from pixel counts: 2|P∩T| / (|P| + |T|), 1 where both are empty; a prediction of fewer
    than `min_area` pixels (or, given `sizes`, whose largest component has fewer) is emptied first (the
    post-processing)."""
    kept = (above if sizes is None else sizes) >= min_area
    above, inter = np.where(kept, above, 0), np.where(kept, inter, 0)
    total = above + truth
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


def pair_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of every (image, class) pair of (N, C, ...) 0/1 masks; an empty truth predicted empty scores 1."""
    pred, truth = pred.reshape(*pred.shape[:2], -1) > 0, truth.reshape(*truth.shape[:2], -1) > 0
    return counted_dice(pred.sum(-1), (pred & truth).sum(-1), truth.sum(-1))


def decide(probs: np.ndarray, threshold: Any, min_area: Any) -> np.ndarray:
    """(C, h, w) probabilities -> which classes keep a mask: a class whose pixels above its threshold
    number fewer than its minimum area is emptied (the Severstal / Clouds post-processing)."""
    c = probs.shape[0]
    above = probs > np.asarray(threshold, np.float32).reshape(-1, 1, 1)[:c] if np.ndim(threshold) else probs > threshold
    return above.reshape(c, -1).sum(1) >= np.broadcast_to(np.asarray(min_area, np.float64), (c,))


def pair_counts(probs: Any, targets: np.ndarray, thresholds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (image, class, threshold) the pixels above the threshold and those of them in the truth, and per
    (image, class) the truth's pixels, read from (N, C, h, w) probabilities a chunk of images at a time (a
    store on disk never read whole). thresholds: (T,) for every class or (C, T) per class."""
    t = np.asarray(thresholds, np.float32)
    t = np.broadcast_to(t, (probs.shape[1], t.shape[-1]))[None, :, :, None]  # (1, C, T, 1)
    empty = np.zeros((0, *t.shape[1:3]), np.int64)
    above, inter, truth = [empty], [empty], [empty[:, :, 0]]
    step = chunk_rows(probs, itemsize=4 + t.shape[2])  # float32 + a bool per threshold
    for start in range(0, len(probs), step):
        chunk = probs[start:start + step]
        p = chunk.reshape(*chunk.shape[:2], 1, -1).astype(np.float32)
        y = np.asarray(targets[start:start + step]).reshape(*chunk.shape[:2], 1, -1) > 0
        hit = p > t
        above.append(hit.sum(-1))
        inter.append((hit & y).sum(-1))
        truth.append(y[:, :, 0].sum(-1))
    return np.concatenate(above), np.concatenate(inter), np.concatenate(truth)


def largest_component(mask: np.ndarray) -> int:
    """Pixels of the largest 8-connected component of a 2-D 0/1 mask (0 when empty)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0


def largest_components(probs: Any, thresholds: Any) -> np.ndarray:
    """(N, 1, T): the largest component's pixels of each image's (N, 1, h, w) probabilities above each
    threshold, read a chunk of images at a time."""
    found = []
    for chunk in array_chunks(probs):
        found += [[[largest_component(p[0] > t) for t in thresholds]] for p in np.asarray(chunk, np.float32)]
    return np.asarray(found, np.int64).reshape(-1, 1, len(thresholds))


THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
AREAS = (0, 4, 8, 16, 32, 64, 128)


def search_postprocess(counts: tuple[np.ndarray, np.ndarray, np.ndarray], thresholds: tuple[float, ...] = THRESHOLDS,
                       areas: tuple[int, ...] = AREAS, sizes: np.ndarray | None = None) -> tuple[list[float], list[int], float]:
    """Per class, the threshold and minimum area that maximise the pair Dice, from pair_counts(..., thresholds):
    (thresholds, areas, the pair Dice reached). With `sizes` (N, C, T: `largest_components`), the minimum
    area is the largest component's (TGS's rule: a mask whose largest component is smaller is emptied)."""
    above, inter, truth = counts                                         # (N, C, T), (N, C, T), (N, C)
    best_t, best_a, scores = [], [], []
    for c in range(above.shape[1]):
        best = (-1.0, 0.5, 0)
        for i, threshold in enumerate(thresholds):
            for area in areas:
                dice = counted_dice(above[:, c, i], inter[:, c, i], truth[:, c], area,
                                    None if sizes is None else sizes[:, c, i])
                best = max(best, (float(dice.mean()), threshold, area), key=lambda x: x[0])
        scores.append(best[0])
        best_t.append(best[1])
        best_a.append(best[2])
    return best_t, best_a, float(np.mean(scores))


def tune_postprocess(probs: Any, targets: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS,
                     areas: tuple[int, ...] = AREAS) -> tuple[list[float], list[int], float]:
    """Per class, the threshold and minimum area (pixels at model resolution) that maximise the pair Dice
    of the out-of-fold masks: (thresholds, areas, the pair Dice reached). The probabilities are read once, a
    chunk at a time."""
    return search_postprocess(pair_counts(probs, targets, thresholds), thresholds, areas)
