"""``RagcunTrainingArguments``: sentence-transformers' training arguments plus ragcun's own keys.

A config's ``[training]`` table is passed to it as keyword arguments, as a sentence-transformers script passes
its own: every key of :class:`~sentence_transformers.SentenceTransformerTrainingArguments` (and so of
transformers' ``TrainingArguments``) means what it means there. The fields below are the keys ragcun adds, and
the defaults ragcun changes (a CPU-sized run that validates every epoch and keeps TensorBoard logs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from sentence_transformers.base.training_args import BatchSamplers
from transformers.trainer_utils import IntervalStrategy, SaveStrategy
from transformers.training_args import OptimizerNames

from ragcun.progress import wanted

HeadInit = Literal["warm", "calibrated", "default"]
StLoss = Literal["none", "mnrl", "distill_kl"]
TrainSide = Literal["both", "query"]


class HashedNoDuplicatesBatchSampler(NoDuplicatesBatchSampler):
    """sentence-transformers' no-duplicates sampler with ``precompute_hashes``: the same batches (a row's
    values as 64-bit hashes, computed once per dataset), where the plain sampler re-reads every row of the
    Arrow table each time it checks it, several times an epoch (a third of a head-only arm's training time in
    the demo).
    The hashes are computed without the datasets cache, so nothing is written beside the training data."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("precompute_hashes", True)
        super().__init__(*args, **kwargs)

    def _build_hashes(self) -> None:
        import datasets

        cached = datasets.is_caching_enabled()
        datasets.disable_caching()
        try:
            super()._build_hashes()
        finally:
            if cached:
                datasets.enable_caching()


@dataclass
class RagcunTrainingArguments(SentenceTransformerTrainingArguments):
    """sentence-transformers' training arguments and ragcun's: the head's learning rate, how the head starts,
    the cached fast paths, SIGReg's corpus sample and the sentence-transformers peer.

    ``head_learning_rate`` becomes an entry of sentence-transformers' ``learning_rate_mapping`` (the head's
    parameters, at their own rate); ``learning_rate`` is the base's. ``eval_steps`` or ``save_steps`` > 0
    switch their strategy to ``"steps"``; validation and checkpoints are otherwise once per epoch.
    """

    # ragcun's defaults for sentence-transformers' own keys
    output_dir: str | None = "runs/train"
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: float = 0.1  # < 1: a ratio of the total steps
    logging_steps: float = 10
    logging_first_step: bool = True
    eval_strategy: IntervalStrategy | str = "epoch"  # "no" when there is no validation data
    eval_steps: float | None = None
    eval_on_start: bool = True  # the warm-started model at step 0, logged and never chosen as best
    save_strategy: SaveStrategy | str = "epoch"
    save_steps: float = 0
    save_total_limit: int | None = 2  # complete checkpoints kept (ragcun rotates them, never a partial one)
    report_to: None | str | list[str] = field(default_factory=lambda: ["tensorboard"])
    optim: OptimizerNames | str = "adamw_torch"
    batch_sampler: BatchSamplers | str | type = BatchSamplers.NO_DUPLICATES
    ddp_find_unused_parameters: bool | None = True  # e.g. BERT's pooler gets no gradient under mean pooling
    # ragcun's own keys
    head_learning_rate: float | None = 5e-4  # None: the head learns at learning_rate
    # warm: start at the base's ranking (docs/method.md)
    head_init: HeadInit = "warm"
    # warm start's whitening power: 0 = the base's geometry, 1 = whitened (N(0, I) covariance)
    head_init_power: float = 0.5
    calibration_samples: int = 1024  # training texts (documents, for warm) the head is initialised on
    fast_frozen: bool = True  # with a frozen base: train the head on cached base features
    # with freeze_layers > 0 (base not frozen): cache the frozen layers' output once, train the layers
    # above on it (ragcun.training.prefix; BERT-family bases)
    fast_prefix: bool = True
    # cached-prefix training: every training text cut to this many tokens (None: the model's max_seq_length)
    train_max_seq_length: int | None = None
    feature_batch_size: int = 64
    # test a fresh uniform sample of this many training documents per step, through the head (exact on a
    # frozen base; through the layers being trained on a cached prefix, recomputed every sigreg_refresh steps)
    sigreg_sample: int = 0
    sigreg_refresh: int = 50
    # the peer: the plain base (its own cosine, no head, no SIGReg) trained with sentence-transformers' own
    # loss on the same data, teacher and budget: mnrl (MultipleNegativesRankingLoss on the labels) or
    # distill_kl (DistillKLDivLoss on the teacher's scores)
    st_loss: StLoss = "none"
    st_temperature: float = 0.05  # the cosine student's temperature (MNRL's scale is its inverse: 20)
    # query: base_model is a trained ragcun model kept whole as the document encoder (its corpus embeddings
    # encoded once, unchanged); a copy of it becomes the query encoder and is trained against them
    # (ragcun.training.query_tower)
    train_side: TrainSide = "both"
    resume: bool = False  # continue from the newest complete checkpoint in output_dir

    def __post_init__(self) -> None:
        if self.eval_steps and self.eval_strategy == "epoch":
            self.eval_strategy = "steps"
        if self.save_steps and self.save_strategy == "epoch":
            self.save_strategy = "steps"
        if self.disable_tqdm is None:
            self.disable_tqdm = not wanted()  # a bar on a terminal; in a log file, the one-line step logs
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.batch_sampler in (BatchSamplers.NO_DUPLICATES, BatchSamplers.NO_DUPLICATES.value):
            self.batch_sampler = HashedNoDuplicatesBatchSampler
        cuda = torch.cuda.is_available() and not self.use_cpu
        if not cuda:
            self.dataloader_pin_memory = False  # pinning helps only a GPU copy (on CPU torch warns)
            if self.ddp_backend is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                self.ddp_backend = "gloo"
        super().__post_init__()  # sets up the devices (and, under torchrun, the process group)
