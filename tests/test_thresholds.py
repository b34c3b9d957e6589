"""Per-label thresholds tuned on out-of-fold probabilities for sample-averaged F-beta."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_cv.cli.commands.score import fbeta_tags
from lightning_cv.predictions.thresholds import (
    fbeta_samples,
    load_thresholds,
    save_thresholds,
    tags,
    tune_thresholds,
)


def _oof(seed: int = 0, n: int = 300):
    """Three labels whose positives sit at different probability levels (badly calibrated models)."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, 3)) < [0.5, 0.3, 0.15]).astype(int)
    centres = np.array([[0.05, 0.25], [0.4, 0.8], [0.1, 0.35]])  # (negative, positive) level per label
    probs = centres[np.arange(3), targets] + rng.normal(0, 0.05, targets.shape)
    return probs.clip(0, 1), targets


def test_fbeta_matches_the_row_definition():
    probs, targets = _oof(n=40)
    names = ["a", "b", "c"]
    pred = tags(probs, names, 0.5)
    truth = [" ".join(n for n, t in zip(names, row) if t) for row in targets]
    expected = np.mean([fbeta_tags(p, t, 2.0) for p, t in zip(pred, truth)])
    forced = np.zeros_like(probs, dtype=bool)
    forced[np.arange(len(probs)), probs.argmax(axis=1)] = True
    assert fbeta_samples(np.where(forced | (probs > 0.5), 1.0, 0.0), targets, 0.5) == pytest.approx(expected)


def test_tuned_thresholds_beat_one_half_and_sit_between_the_levels(tmp_path):
    probs, targets = _oof()
    thresholds = tune_thresholds(probs, targets, beta=2.0)
    assert fbeta_samples(probs, targets, thresholds) > fbeta_samples(probs, targets, 0.5) + 0.1
    assert 0.05 < thresholds[0] < 0.25 and 0.4 < thresholds[1] < 0.8 and 0.1 < thresholds[2] < 0.35
    # Held-out rows from the same models gain as well.
    test_probs, test_targets = _oof(seed=1)
    assert fbeta_samples(test_probs, test_targets, thresholds) > fbeta_samples(test_probs, test_targets, 0.5)
    save_thresholds(tmp_path / "thresholds.json", ["a", "b", "c"], thresholds, 2.0, 0.9)
    np.testing.assert_allclose(load_thresholds(tmp_path / "thresholds.json", ["c", "a", "b"]), thresholds[[2, 0, 1]])
