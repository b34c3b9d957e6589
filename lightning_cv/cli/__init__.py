"""The command line: `lightning-cv` (main), the LightningCLI subclass that wires configs to objects, saved
help texts, and the other verbs (`commands/`). May import every other subpackage; none imports it.
"""

from typing import Any

from lightning_cv.cli.main import COMMANDS, TRAINER_VERBS, build_cli, main

__all__ = ["COMMANDS", "TRAINER_VERBS", "LightningCV", "SaveConfig", "build_cli", "main"]


def __getattr__(name: str) -> Any:
    """`from lightning_cv.cli import LightningCV` (imported on first use: other commands start faster)."""
    if name in ("LightningCV", "SaveConfig"):
        from lightning_cv.cli import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
