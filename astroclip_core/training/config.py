"""The training run's config and result (typed, frozen, JSON round-trippable)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Literal, get_args

from astroclip_core.model.config import PRESETS, ModelConfig
from astroclip_core.training.augment import AugmentConfig

# The default run's length: the ``tiny`` preset trains for this many steps of 64 pairs, which
# keeps ``astroclip run`` under 15 minutes on 2 CPU cores (timings and R2 in the README).
DEFAULT_STEPS = 1700
# Bounds that catch a typo before hours of work: 10 million steps is beyond any planned run,
# and numpy/torch seeds are unsigned 32-bit integers.
MAX_STEPS = 10_000_000
MAX_SEED = 2**32 - 1
# What the loader shuffles as one piece (see astroclip_core.training.data): whole files (the
# order of the loader before it streamed) or single row groups (a streaming shuffle).
ShuffleUnit = Literal["file", "row_group"]
# Autocast precision: "auto" is bf16 where the device computes it natively (a CUDA GPU with
# bf16, or a CPU with AVX512-BF16 or AMX), else fp32; see training.train.resolve_precision.
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    The defaults here are the only ones: the Dagster asset, the runner and ``astroclip run``
    take theirs from this class. Data: ``pairs_dir`` (a hive folder, local path or fsspec URL),
    ``hf_dir`` (the published Hugging Face dataset's folder, of which the ``train`` shards are
    read) or an explicit ``files`` list of either kind; only ``split == 'train'`` rows are used.
    Loader (:mod:`astroclip_core.training.data`): ``shuffle_unit`` ``'file'`` keeps the batches
    of the loader before it streamed; ``'row_group'`` holds about ``shuffle_window_rows`` decoded
    rows whatever the file sizes, for sets that do not fit in memory. Length: ``steps``,
    or ``epochs`` (steps = epochs x batches per epoch); neither gives :data:`DEFAULT_STEPS`.
    ``batch_size`` is per rank; under DDP the global batch is batch_size x world_size, and the
    loss contrasts every pair against all of it. ``precision='auto'`` trains under bf16
    autocast where the device computes bf16 natively and in fp32 elsewhere
    (``training.train.resolve_precision``); weights and optimiser state stay fp32.
    ``stop_after_steps`` ends the process early as if killed after that step's checkpoint (a
    test hook; the run resumes to ``steps``). History rows average the steps since the previous
    row; make ``checkpoint_every`` a multiple of ``log_every`` so that a resumed run's rows
    equal an uninterrupted run's.
    """

    out_dir: str
    model: str | ModelConfig = "tiny"
    pairs_dir: str | None = None
    files: tuple[str, ...] | None = None
    hf_dir: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    precision: Precision = "auto"
    num_threads: int | None = None
    checkpoint_every: int = 100
    resume: bool = True
    log_every: int = 10
    shuffle_window_rows: int = 2048
    cache_max_gb: float = 4.0  # keep decoded files in memory across epochs when they fit
    shuffle_unit: ShuffleUnit = "file"
    prefetch_batches: int = 4  # batches read ahead by a background thread; 0 = none
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stop_after_steps: int | None = None

    def __post_init__(self) -> None:
        sources = [self.pairs_dir, self.hf_dir, self.files]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("give exactly one of pairs_dir, hf_dir and files")
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give steps ({self.steps}) or epochs ({self.epochs}), not both")
        if self.steps is None and self.epochs is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)
        for name in ("batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {self.steps}")
        if self.epochs is not None and not 0 < self.epochs <= MAX_STEPS:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not (0 < self.lr < 1):
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if isinstance(self.model, str) and self.model not in PRESETS:
            raise ValueError(f"unknown model preset {self.model!r}; known: {sorted(PRESETS)}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if self.precision not in get_args(Precision):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.shuffle_unit not in get_args(ShuffleUnit):
            raise ValueError(
                f"shuffle_unit must be 'file' or 'row_group', got {self.shuffle_unit!r}"
            )
        if self.prefetch_batches < 0 or self.shuffle_window_rows < 1:
            raise ValueError(
                f"prefetch_batches ({self.prefetch_batches}) must be >= 0 and "
                f"shuffle_window_rows ({self.shuffle_window_rows}) >= 1"
            )

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["model"] = self.model if isinstance(self.model, str) else self.model.to_dict()
        out["augment"] = asdict(self.augment)
        out["files"] = list(self.files) if self.files is not None else None
        return out

    def to_json(self) -> str:
        """The config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        data = dict(data)
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig.from_dict(data["model"])
        if isinstance(data.get("augment"), dict):
            data["augment"] = AugmentConfig(**data["augment"])
        if data.get("files") is not None:
            data["files"] = tuple(data["files"])
        return cls(**data)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reports (the files it wrote are listed in ``paths``)."""

    steps: int
    final_loss: float
    pairs_per_s: float  # mean over the steps this process ran, all ranks together
    n_params_image: int
    n_params_spectrum: int
    n_params_heads: int
    n_params_total: int
    device: str
    world_size: int
    # batch_size x world_size: the rows of one step, all of them negatives for each other
    global_batch_size: int
    resumed_from_step: int  # 0 for a fresh run
    paths: dict[str, str]  # name -> path: model, config, history, loss_curve, checkpoint
    rank_weight_checksums: tuple[float, ...]  # one per rank; equal when DDP kept them in sync

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what a training process reports to its launcher)."""
        out = asdict(self)
        out["rank_weight_checksums"] = list(self.rank_weight_checksums)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainResult:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        data = dict(data)
        data["rank_weight_checksums"] = tuple(data.get("rank_weight_checksums", ()))
        return cls(**data)
