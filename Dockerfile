# lightning-cv on the official PyTorch CUDA runtime image: torch comes with the image (pip keeps it,
# it is inside the pinned range), everything else is installed from pyproject.toml.
#
#   docker build -t lightning-cv .
#   docker run --gpus all --rm --shm-size 8g -e WANDB_API_KEY \
#     -v "$PWD/data:/work/data" -v "$PWD/runs:/work/runs" \
#     lightning-cv fit --config configs/cls.yaml --trainer.precision 16-mixed
#
# Without WANDB_API_KEY, W&B logs offline into the run folder (sync later with `wandb sync`).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1

# A regular install: the competition template goes to <prefix>/share/lightning-cv (pyproject data-files).
WORKDIR /opt/lightning-cv
COPY pyproject.toml README.md ./
COPY lightning_cv ./lightning_cv
COPY templates ./templates
COPY configs ./configs
RUN pip install --no-cache-dir . \
    && python -I -c "import torch; from lightning_cv.cli.commands.new import template_dir; print(torch.__version__, template_dir())"

# Runs as an unprivileged user; /work is where data/ and runs/ are mounted.
# (uid 10001: Ubuntu-based images may already have uid 1000.)
RUN groupadd --gid 10001 lcv \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash lcv \
    && mkdir -p /work/data /work/runs \
    && cp -r /opt/lightning-cv/configs /work/configs \
    && chown -R 10001:10001 /work
USER 10001:10001
WORKDIR /work
ENV HOME=/home/lcv \
    TORCH_HOME=/home/lcv/.cache/torch \
    HF_HOME=/home/lcv/.cache/huggingface

ENTRYPOINT ["lightning-cv"]
CMD ["--help"]
