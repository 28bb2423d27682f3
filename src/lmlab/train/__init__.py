"""Training: `train(...)` sets up or resumes a run directory; `fit(...)` is the loop.

Evaluation metrics beyond the validation loss live in lmlab/evaluate; plots in lmlab/viz.
"""
from lmlab.train.run import RunResult, train
from lmlab.train.trainer import FitResult, TrainConfig, fit

__all__ = ["FitResult", "RunResult", "TrainConfig", "fit", "train"]
