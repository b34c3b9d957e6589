"""Files out: predictions as arrays on disk (stores, predictions.npz), the prediction writer, submissions in
a sample's shape, and the decisions tuned on out-of-fold predictions (thresholds, post-processing). May import `io`.
"""
