"""The verbs beside fit/validate/test/predict: cv, ensemble, export, package, crop, score, demo, new. Each is a
function whose signature is its command line; they ask the task registry, never name a task. They may import
every room below `cli`, and `cli.main` to run fit or predict in-process.
"""
