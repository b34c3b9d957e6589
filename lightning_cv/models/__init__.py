"""Model parts: backbones by name (timm, smp), losses, torchmetrics metrics, learning-rate schedules, and how a
model runs on a batch (test-time augmentation, tiles). May import `io`.
"""
