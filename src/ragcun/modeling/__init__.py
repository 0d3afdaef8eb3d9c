"""The Gaussian encoder (:mod:`.encoder`) and the data-dependent starts of its head (:mod:`.head_init`)."""

from ragcun.modeling.encoder import (
    RAGCUN_CONFIG,
    HeadInit,
    HeadType,
    IsotropicGaussianEncoder,
    build_head,
    query_document_prompts,
    run_info,
    split_at_head,
    submodel,
)
from ragcun.modeling.head_init import WhitenKind, affine_start, whitening_map

__all__ = [
    "RAGCUN_CONFIG", "HeadInit", "HeadType", "IsotropicGaussianEncoder", "WhitenKind", "affine_start", "build_head",
    "query_document_prompts", "run_info", "split_at_head", "submodel", "whitening_map",
]
