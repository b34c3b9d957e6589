"""lightning-cv: the image-competition loop on PyTorch Lightning.

Rooms in the order data flows, each importing only rooms below it (tests/test_house.py): io (files in);
models, predictions (files out), pictures; data; tasks; training; report; cli. The root is the face: this
module (environment defaults, the version), `errors` and `_env`, and may import only those two.
"""

from lightning_cv._env import apply_env_defaults

apply_env_defaults()

__version__ = "0.1.0"
