#!/usr/bin/env bash
# bench/gpu.sh: fit throughput (img/s) of resnet50 at 224 px on this machine's GPUs -> bench/gpu-results.md
#
#   bench/gpu.sh                 # on a CUDA machine, from a checkout with .venv (or `make install` done)
#   bench/gpu.sh --cpu           # dry run on CPU: every command line for 2 steps at 64 px (proves they parse)
#   bench/gpu.sh --out FILE      # write the table elsewhere
#
# What runs (sized for about 8 minutes on one H200): the project's `lightning-cv fit` of resnet50 (no pretrained
# weights, nothing downloaded) in 32-true, 16-mixed and bf16-mixed, channels_last on/off,
# `--model.compile` on/off (with bf16-mixed), DDP over all GPUs when there is more than one
# (`--trainer.devices -1 --trainer.strategy ddp`), the project's DataLoader alone (the data ceiling),
# and, when `TIMM_TRAIN` names it, timm's own `train.py --amp` on the same images.
#
# How img/s is measured: a small callback (written below into the work folder, passed with
# `--trainer.callbacks+=`) starts a clock after SKIP optimizer steps (cuDNN autotuning, torch.compile,
# worker start-up all fall in those) and stops it at the last of STEPS further steps, with a
# torch.cuda.synchronize at both ends; img/s = images in those steps (x world size under DDP) / seconds.
# Start-up, checkpointing and imports are outside the clock. Validation is off. timm's train.py logs
# its running mean step time every --log-interval steps; its img/s is taken between its first log line
# at or after SKIP and its last, the same window. Both sides read the same 224 px JPEGs (generated
# here: one folder per class, hard links to 256 distinct images), with no augmentation (timm:
# --no-aug, which still resizes and centre-crops), AdamW, the same batch size and worker count.
#
# timm's train.py is not part of the timm package. To include it (offline machines: copy it over):
#   git clone --depth 1 --branch v$(python -c 'import timm; print(timm.__version__)') \
#       https://github.com/huggingface/pytorch-image-models /tmp/pytorch-image-models
#   TIMM_TRAIN=/tmp/pytorch-image-models/train.py bench/gpu.sh
# Without it the timm row says "skipped".
#
# Environment: PYTHON (default .venv/bin/python, else python), TIMM_TRAIN, GPU_BENCH_DIR (work folder,
# default /tmp/lightning-cv-gpu-bench: data, logs, runs), BATCH (per GPU, 256), WORKERS (DataLoader
# workers per process; default the project's own choice, min(8, CPUs - 1)), SKIP (15), STEPS (50),
# EXTRA (more fit options for every project row, e.g. "--trainer.benchmark true": timm turns cuDNN
# benchmark on, the project leaves Lightning's default). W&B is disabled for the runs.
set -euo pipefail

cd "$(dirname "$0")/.."
CPU=0
OUT=bench/gpu-results.md
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu) CPU=1; OUT=; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python
fi
WORK=${GPU_BENCH_DIR:-/tmp/lightning-cv-gpu-bench}
OUT=${OUT:-$WORK/gpu-results.md}
export WANDB_MODE=disabled NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import torch, lightning_cv" 2>/dev/null; then
    echo "bench/gpu.sh: $PY cannot import torch and lightning_cv: run make install, or set PYTHON." >&2
    exit 1
fi
if [[ $CPU == 1 ]]; then
    ACCEL=cpu SIZE=64 BATCH=4 SKIP=1 STEPS=2 WORKERS=${WORKERS:-0} GPUS=2  # GPUS: the 2-process DDP dry run
else
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "bench/gpu.sh: no CUDA GPU visible to $PY (torch.cuda.is_available() is False)." >&2
        echo "It measures GPU throughput only; bench/gpu.sh --cpu dry-runs its command lines on CPU." >&2
        exit 1
    fi
    ACCEL=gpu SIZE=224 BATCH=${BATCH:-256} SKIP=${SKIP:-15} STEPS=${STEPS:-50}
    GPUS=$(nvidia-smi -L | grep -c '^GPU')
    WORKERS=${WORKERS:-$("$PY" -c "from lightning_cv.data.base import default_num_workers as d; print(d())")}
fi
mkdir -p "$WORK/logs" "$WORK/timing"
rm -f "$WORK"/timing/*.json

# -- the timing callback ------------------------------------------------------------------------------
cat > "$WORK/gpu_bench_timer.py" <<'EOF'
"""Seconds and images of the optimizer steps after the first `skip` (written by bench/gpu.sh)."""
import json
import time

import torch
from lightning.pytorch.callbacks import Callback


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(Callback):
    def __init__(self, skip: int = 15, out: str = "timing.json"):
        self.skip, self.out, self.images, self.start = skip, out, 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None and trainer.global_step >= self.skip:
            _sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is None:
            return
        self.images += len(batch["image"]) * trainer.world_size
        if trainer.global_step >= trainer.max_steps:
            _sync()
            seconds = time.perf_counter() - self.start
            if trainer.is_global_zero:
                with open(self.out, "w") as f:
                    json.dump({"images": self.images, "seconds": seconds, "img_s": self.images / seconds}, f)
EOF

# -- the data: 224 px JPEGs in an ImageFolder layout (train/, validation/), hard links to 256 images --
NEED=$(( (SKIP + STEPS + 4) * BATCH * GPUS * 5 / 4 + 2 * BATCH ))  # the project holds out 20 % for validation
DATA=$WORK/data-$SIZE-$NEED
if [[ ! -f $DATA/done ]]; then
    echo "writing $NEED training images ($SIZE px) to $DATA"
    "$PY" - "$DATA" "$SIZE" "$NEED" <<'EOF'
import os
import sys
from pathlib import Path

import cv2
import numpy as np

root, size, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
sources = []
for i in range(256):  # smooth gradients plus noise, so they decode like photos
    a, b = rng.uniform(0.01, 0.1, 2)
    image = np.stack([np.sin(xx * a + i), np.cos(yy * b), np.sin((xx + yy) * a * b)], axis=2) * 100 + 128
    image += rng.normal(0, 12, image.shape)
    path = root / "distinct" / f"{i:03d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    sources.append(path)
for split, count in (("train", n), ("validation", 128)):
    for i in range(count):
        link = root / split / f"class{i % 2}" / f"{i:07d}.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[i % len(sources)], link)
(root / "done").touch()
EOF
fi

# -- runs -----------------------------------------------------------------------------------------------
ROWS=()  # "name|img/s|note"
log_fail() {  # name, log
    echo "  FAILED: last lines of $2:" >&2
    tail -n 15 "$2" >&2 || true
}

fit() {  # name precision channels_last compile devices [note]
    local name=$1 precision=$2 cl=$3 compile=$4 devices=$5 note=${6:-}
    local log=$WORK/logs/$name.log timing=$WORK/timing/$name.json strategy=auto
    [[ $devices != 1 ]] && strategy=ddp
    echo "fit $name"
    # shellcheck disable=SC2086  # EXTRA is a list of options
    if timeout 600 "$PY" -m lightning_cv fit \
        --model lightning_cv.tasks.ClassificationTask --model.backbone resnet50 --model.pretrained false \
        --model.channels_last "$cl" --model.compile "$compile" \
        --data lightning_cv.data.ClassificationDataModule --data.data_dir "$DATA" --data.image_dir train \
        --data.image_size "$SIZE" --data.batch_size "$BATCH" --data.num_workers "$WORKERS" \
        --trainer.accelerator "$ACCEL" --trainer.devices "$devices" --trainer.strategy "$strategy" \
        --trainer.precision "$precision" --trainer.max_steps $((SKIP + STEPS)) --trainer.limit_val_batches 0 \
        --trainer.num_sanity_val_steps 0 --trainer.logger false --trainer.enable_progress_bar false \
        --trainer.enable_model_summary false --trainer.default_root_dir "$WORK/runs/$name" \
        --trainer.callbacks+=gpu_bench_timer.StepTimer --trainer.callbacks.skip "$SKIP" \
        --trainer.callbacks.out "$timing" ${EXTRA:-} >"$log" 2>&1 && [[ -f $timing ]]; then
        ROWS+=("$name|$("$PY" -c "import json, sys; print(round(json.load(open(sys.argv[1]))['img_s'], 1))" "$timing")|$note")
    else
        log_fail "$name" "$log"
        ROWS+=("$name|failed|see $log")
    fi
}

loader() {  # the project's training DataLoader alone, batches moved to the device: the data ceiling
    local log=$WORK/logs/loader.log
    echo "loader alone"
    if timeout 300 "$PY" - "$DATA" "$SIZE" "$BATCH" "$WORKERS" "$SKIP" "$STEPS" >"$log" 2>&1 <<'EOF'; then
import sys
import time

import torch

from lightning_cv.data import ClassificationDataModule

data_dir, size, batch, workers, skip, steps = sys.argv[1], *map(int, sys.argv[2:])
module = ClassificationDataModule(data_dir=data_dir, image_dir="train", image_size=size, batch_size=batch,
                                  num_workers=workers)
module.setup("fit")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
for i, sample in enumerate(module.train_dataloader()):
    sample["image"].to(device, non_blocking=True)
    if i == skip:
        start = time.perf_counter()
    if i == skip + steps:
        break
if device.type == "cuda":
    torch.cuda.synchronize()
print(f"img/s {steps * batch / (time.perf_counter() - start):.1f}")
EOF
        ROWS+=("DataLoader alone (no model)|$(awk '/^img\/s/ {print $2}' "$log")|decode, resize, float32, pin, copy to GPU; $WORKERS workers")
    else
        log_fail loader "$log"
        ROWS+=("DataLoader alone (no model)|failed|see $log")
    fi
}

timm_train() {  # timm's train.py, one GPU
    local log=$WORK/logs/timm.log amp=(--amp --device cuda) name="timm train.py --amp (float16)" ips
    [[ $CPU == 1 ]] && amp=(--device cpu) && name="timm train.py (fp32, CPU dry run)"
    if [[ -z ${TIMM_TRAIN:-} || ! -f ${TIMM_TRAIN:-} ]]; then
        ROWS+=("$name|skipped|set TIMM_TRAIN to pytorch-image-models' train.py (header)")
        return
    fi
    echo "timm train.py"
    # One epoch of the training images on one GPU; the window is SKIP..end, read from its log lines.
    if timeout 600 "$PY" "$TIMM_TRAIN" --data-dir "$DATA" --train-split train --val-split validation \
        --model resnet50 --num-classes 2 --img-size "$SIZE" -b "$BATCH" --workers "$WORKERS" --pin-mem \
        --no-aug --opt adamw --lr 1e-3 --weight-decay 1e-4 --epochs 1 --warmup-epochs 0 --log-interval 1 \
        --checkpoint-hist 1 --output "$WORK/runs/timm" "${amp[@]}" >"$log" 2>&1; then
        ips=$("$PY" - "$log" "$SKIP" <<'EOF' || echo "unparsed: see $log"
import re
import sys

# "Train: 0 [  20/79 ( 27%)]  Loss: ... Time: 0.081s, 3160.49/s  (0.093s, 2752.69/s) ..."
pattern = re.compile(r"Train: \d+ \[\s*(\d+)/\d+.*?Time: [\d.]+s,\s*[\d.]+/s\s+\(([\d.]+)s,\s*([\d.]+)/s\)")
skip = int(sys.argv[2])
points = [(int(m[1]), float(m[2]), float(m[3])) for m in pattern.finditer(open(sys.argv[1]).read())]
(i0, t0, r0), (i1, t1, _) = next(p for p in points if p[0] >= skip), points[-1]
batch = r0 * t0  # images per step (the log gives the rate of a mean step)
print(round((i1 - i0) * batch / (t1 * (i1 + 1) - t0 * (i0 + 1)), 1))
EOF
)
        ROWS+=("$name|$ips|same images, no augmentation, AdamW, one GPU; compare with 16-mixed")
    else
        log_fail timm "$log"
        ROWS+=("$name|failed|see $log")
    fi
}

if [[ $CPU == 1 ]]; then
    fit "32-true" 32-true false false 1 "baseline"
    fit "32-true, channels_last" 32-true true false 1
    fit "bf16-mixed" bf16-mixed false false 1
    fit "bf16-mixed, channels_last" bf16-mixed true false 1
    ROWS+=("16-mixed|skipped|no float16 autocast on CPU" "--model.compile|skipped|minutes of compiling on CPU")
    fit "32-true, DDP x2" 32-true false false 2 "2 CPU processes (gloo)"
else
    fit "32-true" 32-true false false 1 "baseline (TF32 matmuls: the Trainer sets float32_matmul_precision high)"
    fit "32-true, channels_last" 32-true true false 1
    fit "16-mixed" 16-mixed false false 1
    fit "16-mixed, channels_last" 16-mixed true false 1
    fit "bf16-mixed" bf16-mixed false false 1
    fit "bf16-mixed, channels_last" bf16-mixed true false 1
    fit "bf16-mixed, compile" bf16-mixed false true 1 "compiling falls in the $SKIP skipped steps"
    fit "bf16-mixed, channels_last, compile" bf16-mixed true true 1 "compiling falls in the $SKIP skipped steps"
    if [[ $GPUS -gt 1 ]]; then
        # One process per GPU, each with its own workers: the CPUs are split between them.
        share=$(( ($(nproc) - 1) / GPUS )); share=$(( share < 1 ? 1 : share < WORKERS ? share : WORKERS ))
        WORKERS=$share fit "bf16-mixed, channels_last, DDP x$GPUS" bf16-mixed true false -1 \
            "all $GPUS GPUs, $BATCH and $share workers per GPU; ideal: $GPUS x the one-GPU row"
    else
        ROWS+=("DDP|skipped|one GPU here")
    fi
fi
loader
timm_train

# -- the table ------------------------------------------------------------------------------------------
{
    echo "# GPU fit throughput: resnet50, ${SIZE} px"
    echo
    echo "\`bench/gpu.sh\`$([[ $CPU == 1 ]] && echo " --cpu (dry run: 2 steps, numbers meaningless)") on $(date '+%Y-%m-%d %H:%M'):" \
        "batch $BATCH per device, $WORKERS DataLoader workers, img/s over $STEPS optimizer steps after $SKIP" \
        "(start-up, cuDNN autotuning and compiling excluded; see the script's header)."
    echo
    echo "| machine | |"
    echo "|---|---|"
    if [[ $CPU == 0 ]]; then
        nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader |
            sed 's/^\([0-9]*\), /| GPU \1 (name, driver, memory) | /; s/$/ |/'
        echo "| CUDA (driver) | $(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p') |"
    fi
    "$PY" - <<'EOF'
import os
import platform

import lightning
import timm
import torch

print(f"| CPU cores | {len(os.sched_getaffinity(0))} ({platform.processor() or platform.machine()}) |")
print(f"| torch | {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}) |")
print(f"| lightning, timm | {lightning.__version__}, {timm.__version__} |")
EOF
    echo
    echo "| configuration | img/s | vs 32-true | note |"
    echo "|---|---|---|---|"
    base=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '$1 == "32-true" {print $2}')
    for row in "${ROWS[@]}"; do
        IFS='|' read -r name ips note <<<"$row"
        ratio=-
        if [[ $name != DataLoader* && $ips =~ ^[0-9.]+$ && $base =~ ^[0-9.]+$ ]]; then ratio=$(awk -v a="$ips" -v b="$base" 'BEGIN {printf "%.2f", a / b}'); fi
        echo "| $name | $ips | $ratio | $note |"
    done
} >"$OUT"
cat "$OUT"
echo "wrote $OUT (logs in $WORK/logs)"
