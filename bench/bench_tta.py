"""Predict with horizontal-flip TTA against predict without, per image, through the task's predict_step."""

from __future__ import annotations

import common
import torch
from common import Row

BATCH, SIZE, BATCHES = 32, 32, 3


def predict(task, mode: str, batches: list[dict]) -> None:
    task.tta = mode
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            task.predict_step(batch, i)


def run(quick: bool = False) -> list[Row]:
    from lightning_cv.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    task = ClassificationTask(num_classes=10, backbone="resnet18", image_size=SIZE).eval()
    batches = [{"image": torch.rand(BATCH, 3, SIZE, SIZE), "id": [str(i) for i in range(BATCH)]} for _ in range(BATCHES)]
    t = common.side_by_side({"hflip": lambda: predict(task, "hflip", batches), "none": lambda: predict(task, "none", batches)},
                            repeats=3)
    n = BATCH * BATCHES
    per = {k: 1000 * v / n for k, v in t.items()}
    return [Row("predict with flip TTA (hflip, 2 views) ÷ without, per image (resnet18, 32 px, batch 32)", "hflip",
                per["hflip"], "none", per["none"], "ms/image", "<=2.1", per["hflip"] / per["none"],
                "ClassificationTask.predict_step, --model.tta hflip")]


if __name__ == "__main__":
    for row in run():
        row.show()
