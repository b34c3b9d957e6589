"""lightning-cv: the image-competition loop on PyTorch Lightning."""

from lightning_cv._env import apply_env_defaults

apply_env_defaults()

__version__ = "0.1.0"
