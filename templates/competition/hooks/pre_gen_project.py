"""Reject answers the generated config could not use, before any file is written (the task's own checks
run with the task's files, in post_gen_project.py)."""

import sys

ANSWERS = {
    "num_classes": "{{ cookiecutter.num_classes }}",
    "image_size": "{{ cookiecutter.image_size }}",
    "folds": "{{ cookiecutter.folds }}",
}

errors = [f"{key} must be a positive integer, got {value!r}" for key, value in ANSWERS.items()
          if not value.isdigit() or int(value) < 1]
if ANSWERS["folds"].isdigit() and int(ANSWERS["folds"]) < 2:
    errors.append("folds must be at least 2")
if errors:
    print("error: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
