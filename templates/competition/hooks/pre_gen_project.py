"""Reject answers the generated config could not use, before any file is written."""

import sys

ANSWERS = {
    "num_classes": "{{ cookiecutter.num_classes }}",
    "image_size": "{{ cookiecutter.image_size }}",
    "folds": "{{ cookiecutter.folds }}",
}
TASK = "{{ cookiecutter.task }}"

errors = [f"{key} must be a positive integer, got {value!r}" for key, value in ANSWERS.items()
          if not value.isdigit() or int(value) < 1]
if TASK not in ("cls", "seg", "bbox"):
    errors.append(f"task must be cls, seg or bbox, got {TASK!r}")
elif TASK == "seg" and ANSWERS["image_size"].isdigit() and int(ANSWERS["image_size"]) % 32:
    errors.append(f"seg image_size must be a multiple of 32 (the encoder stride), got {ANSWERS['image_size']}")
if ANSWERS["folds"].isdigit() and int(ANSWERS["folds"]) < 2:
    errors.append("folds must be at least 2")
if errors:
    print("error: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
