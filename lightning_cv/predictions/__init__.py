"""Files out: predictions as arrays on disk (stores, predictions.npz), the prediction writer, submissions in
a sample's shape, probability maps of large images written and read band by band, box fusion and prediction
strings, and the decisions tuned on out-of-fold predictions (thresholds, post-processing). May import `io`.
"""
