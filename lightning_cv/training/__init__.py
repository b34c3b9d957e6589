"""Fit's surroundings: callbacks (pictures, EMA, checkpoints, split.csv), the Trainer with the precision picked
from the hardware, loggers and provenance (environment.json). May import everything up to `tasks`.
"""
