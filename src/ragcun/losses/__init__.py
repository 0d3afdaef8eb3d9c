"""Losses: SIGReg (LeJEPA's sliced Epps–Pulley test), Euclidean InfoNCE, distillation from a teacher's
scores (listwise KL, MarginMSE), the combined objective, and a query tower's loss against a fixed corpus."""

from ragcun.losses.contrastive import EuclideanInfoNCE, pairwise_distance
from ragcun.losses.corpus import FixedCorpusLoss
from ragcun.losses.distillation import EuclideanDistillKLLoss, EuclideanMarginMSELoss
from ragcun.losses.objective import IsotropicGaussianLoss, covariance_regularizer
from ragcun.losses.queue import FeatureQueue
from ragcun.losses.sigreg import EppsPulley, SIGReg, epps_pulley

__all__ = [
    "EppsPulley",
    "EuclideanDistillKLLoss",
    "EuclideanInfoNCE",
    "EuclideanMarginMSELoss",
    "FeatureQueue",
    "FixedCorpusLoss",
    "IsotropicGaussianLoss",
    "SIGReg",
    "covariance_regularizer",
    "epps_pulley",
    "pairwise_distance",
]
