"""environment.json: what a run directory needs to be reproduced (versions, hardware, code, command)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from lightning_cv.io import atomic_path

PACKAGES = ("lightning-cv", "torch", "torchvision", "lightning", "timm", "segmentation-models-pytorch", "albumentations",
            "torchmetrics", "opencv-python-headless", "numpy", "pydicom", "wandb")


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    """A short command's output, or None when it is missing, fails or hangs."""
    try:
        with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                return None
    except OSError:
        return None
    return out.strip() if proc.returncode == 0 else None


def git_state(directory: Path) -> dict[str, Any] | None:
    """The commit of the git work tree holding `directory`, and whether it has uncommitted changes."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=directory) if shutil.which("git") else None
    if commit is None:
        return None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory)
    return {"commit": commit, "dirty": bool(status), "root": _run(["git", "rev-parse", "--show-toplevel"], cwd=directory)}


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _cpu_name() -> str | None:
    """The CPU model from /proc/cpuinfo (Linux), without starting a process."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _hardware() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if cuda and shutil.which("nvidia-smi") else None
    return {"machine": platform.machine(), "cpu": _cpu_name(), "cpus": os.cpu_count(),
            "cuda": torch.version.cuda if cuda else None, "driver": driver.splitlines()[0] if driver else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}


def environment(argv: list[str] | None = None) -> dict[str, Any]:
    """Python, package versions, hardware, the working directory's git commit and the command line."""
    return {"python": sys.version.split()[0], "platform": f"{platform.system()} {platform.release()}", "packages": _versions(),
            "hardware": _hardware(), "git": git_state(Path.cwd()), "cwd": str(Path.cwd()),
            "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]}


def write_environment(run_dir: Path, argv: list[str] | None = None) -> Path:
    path = Path(run_dir) / "environment.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(environment(argv), indent=2))
    return path
