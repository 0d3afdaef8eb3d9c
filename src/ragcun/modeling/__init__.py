"""The Gaussian encoder (:mod:`.encoder`), the data-dependent starts of its head (:mod:`.head_init`) and any
model's body and head as parts (:mod:`.parts`)."""

from ragcun.modeling.encoder import (
    RAGCUN_CONFIG,
    HeadInit,
    HeadType,
    IsotropicGaussianEncoder,
    build_head,
    query_document_prompts,
    run_info,
)
from ragcun.modeling.head_init import WhitenKind, affine_start, whitening_map
from ragcun.modeling.parts import apply_modules, encode_base, parameter_counts, split_at_head, submodel

__all__ = [
    "RAGCUN_CONFIG", "HeadInit", "HeadType", "IsotropicGaussianEncoder", "WhitenKind", "affine_start",
    "apply_modules", "encode_base",
    "build_head", "parameter_counts", "query_document_prompts", "run_info", "split_at_head", "submodel",
    "whitening_map",
]
