"""Model parts: backbones by name (timm, smp), detectors (FCOS on an FPN), losses, torchmetrics metrics and the
leaderboards' box metrics, learning-rate schedules, and how a model runs on a batch (test-time augmentation for
images and boxes, tiles, and tiles stitched band by band). May import `io`.
"""
