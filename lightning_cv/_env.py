"""Process-wide defaults that keep a plain command from hanging or phoning home."""

import netrc
import os


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def apply_env_defaults() -> None:
    """Set defaults before albumentations / wandb / huggingface_hub read them; explicit settings win."""
    # albumentations checks PyPI for a newer release at import time.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # Without credentials wandb raises (no TTY) or prompts (TTY); offline runs can be synced later.
    if "WANDB_MODE" not in os.environ and not _wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
