"""How texts are encoded: the settings every encoding command, the experiment's ``[evaluation]`` section and
the Python API share, carried as one object instead of eight arguments.

``evaluate_model``, ``evaluate_rag`` and ``isotropy.analyze`` accept ``settings=EncodeSettings(...)`` or the
same fields as keywords (not both); either way their bodies read only the settings, and
:meth:`EncodeSettings.load` is the one place a model is loaded, truncated, batched and put under its runtime
for them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EncodeSettings:
    """The split read, the encoding batch and truncation, where data and the embedding cache are, the device
    and the runtime (backend and precision; ``None`` = ``auto``, see :mod:`ragcun.runtime`)."""

    split: str = "test"
    batch_size: int | None = None
    max_seq_length: int | None = None
    data_dir: str | os.PathLike | None = None
    cache: bool = True
    device: str | None = None
    backend: str | None = None
    precision: str | None = None

    @classmethod
    def of(cls, settings: EncodeSettings | None, **given: Any) -> EncodeSettings:
        """``settings``, or the settings the keywords describe. Keywords left at their defaults are not
        "given"; giving both an object and keywords that differ from the defaults is refused."""
        defaults = cls()
        changed = {k: v for k, v in given.items() if v != getattr(defaults, k)}
        if settings is None:
            return dataclasses.replace(defaults, **given)
        if changed:
            raise ValueError(f"pass the encoding settings as settings= or as keywords, not both "
                             f"({', '.join(sorted(changed))} given beside settings=)")
        return settings

    def load(self, model: Any, defer_measured: bool = False) -> tuple[Any, str, Any, int]:
        """``(model, display name, runtime, batch size)``: the model loaded by the one loader under these
        settings, and the runtime it really runs (a model given already prepared keeps its own).

        ``defer_measured``: where ``auto`` is still to be measured, or the runtime is calibrated on the corpus
        (OpenVINO int8), return the torch fp32 model and that runtime, for a caller that prepares it per
        dataset with the data at hand (``evaluate``: :mod:`ragcun.evaluation.runtime_check`)."""
        from ragcun.encoding.models import check_batch_size, load_model
        from ragcun.runtime import resolve_runtime, runtime_of

        runtime = resolve_runtime(self.backend, self.precision, self.device)
        batch_size = check_batch_size(self.batch_size, self.device)
        deferred = defer_measured and (runtime.is_measured or runtime.needs_calibration)
        model, name = load_model(model, self.device, self.max_seq_length, None if deferred else runtime)
        if deferred and runtime_of(model).is_reference:
            return model, name, runtime, batch_size
        return model, name, runtime_of(model), batch_size
