"""Where a run came from: `environment.json` in its directory (the command line, package versions,
hardware with CUDA and driver, the working tree's git commit, start, end and wall time), written by every
`fit`/`validate`/`test`/`predict`/`lr_find` run and by `cv`, read by `report`."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PROVENANCE = "environment.json"
PACKAGES = ("lightning-cv", "torch", "torchvision", "lightning", "timm", "segmentation-models-pytorch", "albumentations",
            "torchmetrics", "opencv-python-headless", "numpy", "pydicom", "wandb")


def versions() -> dict[str, str]:
    """The installed versions of the packages a result depends on (read from metadata, nothing imported)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    """A short command's output, or None when it is missing, fails or hangs (Popen: never `subprocess.run`,
    which callers may have replaced)."""
    if shutil.which(command[0]) is None:
        return None
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
    commit = _run(["git", "rev-parse", "HEAD"], cwd=directory)
    if commit is None:
        return None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory)
    return {"commit": commit, "dirty": bool(status), "root": _run(["git", "rev-parse", "--show-toplevel"], cwd=directory)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()  # not platform.processor(): it runs `uname -p` in a subprocess


def hardware() -> dict[str, Any]:
    """CPU model and count, the system, and the GPUs, CUDA and driver torch sees (only asked when torch is
    already imported)."""
    system = os.uname() if hasattr(os, "uname") else None
    found: dict[str, Any] = {"cpu": _cpu_name(), "cpus": os.cpu_count(),
                             "system": f"{system.sysname} {system.release}" if system else platform.system()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        found["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        found["cuda"] = torch.version.cuda
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        found["driver"] = driver.splitlines()[0] if driver else None
    return found


# The arguments `lightning_cv.cli.main` was given: sys.argv's, unless main was called from Python (tests,
# notebooks), where sys.argv is the caller's.
_COMMAND: list[str] = []


def remember_command(argv: list[str]) -> None:
    """Note the command this process runs (called by `lightning_cv.cli.main`)."""
    _COMMAND[:] = list(argv)


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: `lightning-cv VERB ...` (also when started as `python -m lightning_cv`)."""
    return shlex.join(["lightning-cv", *(argv if argv is not None else _COMMAND or sys.argv[1:])])


def write_provenance(run_dir: Path, argv: list[str] | None = None) -> Path:
    """Start a run's environment.json (command line, versions, hardware, git state, start time)."""
    record = {"command": command_line(argv), "cwd": os.getcwd(), "started": datetime.now().isoformat(timespec="seconds"),
              "versions": versions(), "hardware": hardware(), "git": git_state(Path.cwd())}
    return _write(Path(run_dir), record)


def finish_provenance(run_dir: Path) -> None:
    """Add the end time and the wall time (seconds) to a run's environment.json, if it has one."""
    record = read_provenance(run_dir)
    if record is None or "started" not in record:
        return
    now = datetime.now()
    record["finished"] = now.isoformat(timespec="seconds")
    record["wall_s"] = round((now - datetime.fromisoformat(record["started"])).total_seconds(), 1)
    _write(Path(run_dir), record)


def read_provenance(run_dir: Path) -> dict[str, Any] | None:
    """A run's environment.json, or None (runs made before it existed, unreadable files)."""
    path = Path(run_dir) / PROVENANCE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(run_dir: Path, record: dict[str, Any]) -> Path:
    from lightning_cv.io.images import atomic_path  # (cv2 and numpy: not at the start-up of every command)

    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / PROVENANCE) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return run_dir / PROVENANCE
