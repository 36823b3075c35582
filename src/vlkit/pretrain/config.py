"""The typed config of ``vlkit pretrain`` (a YAML recipe + dotted overrides).

A recipe names a model spec, a dataset, the objectives (composable with weights), the engine's
settings and what to evaluate at the end. Every key has a default; unknown keys fail with the
list of valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..engine.config import EngineConfig


@dataclass
class DataConfig:
    name: str = "openmoji"  # dataset spec NAME[:view][=PATH] (see `vlkit data list`)
    split: str = "train"
    options: dict = field(default_factory=dict)  # dataset options (image_size, seed, ...)
    caption: Literal["random", "first", "all"] = "random"  # which caption(s) of each image
    augment: bool = True  # RandomResizedCrop on the image side
    scale: tuple[float, float] = (0.9, 1.0)  # RandomResizedCrop scale range (open_clip's)
    max_samples: int | None = None  # use only the first N samples (quick runs)
    # style randomisation (vlkit.data.styles): each sample, each epoch, is drawn in a random
    # style with this probability (0: never); the choice hashes (seed, epoch, index)
    style_mix: float = 0.0
    styles: list[str] | None = None  # the styles style_mix draws from; null: every style but original
    # Streamed WebDataset shards (vlkit.data.stream, open_clip_train's way): true streams, false
    # indexes the shards (caches frozen towers); null streams when name is webdataset=URL/pipe:,
    # or num_samples/resampled is set, or a sizes.json lies beside the shards.
    stream: bool | None = None
    num_samples: int | None = None  # samples per epoch of a stream (open_clip's --train-num-samples)
    resampled: bool = False  # draw shards with replacement per worker (open_clip's --dataset-resampled)
    shuffle_buffer: int = 1000  # samples shuffled in a buffer per worker (1: no shuffle)


@dataclass
class EvalConfig:
    data: str | None = None  # dataset spec to evaluate on at the end; None: no evaluation
    split: str = "test"
    suites: list[str] = field(default_factory=lambda: ["retrieval"])
    options: dict = field(default_factory=dict)  # per-suite options, {suite: {key: value}}
    data_options: dict = field(default_factory=dict)  # dataset options, e.g. {skin_tones: false}


@dataclass
class PretrainConfig:
    model: Any = "preset:moji-lit-s"  # a vlkit model spec, or an inline model config (mapping)
    freeze: list[str] = field(default_factory=list)  # parts to freeze on top of the spec's own
    heads: dict | None = None  # new heads for both towers, e.g. {type: gated_mlp} (SAIL)
    cache_frozen: bool = True  # frozen, un-augmented towers: encode once, reuse every step
    # K > 0: an image tower with a frozen pretrained stage (convvit pretrained_stem) runs that stage
    # once on K augmented views of each image (data.scale crops, cached); each step reads one view
    # per image and runs only the trainable part. 0: the whole tower runs every step.
    stage_views: int = 0
    objectives: list[Any] = field(default_factory=lambda: [{"name": "clip"}])
    init_logit_scale: Literal["objective", "model"] = "objective"  # start from the paper's value
    data: DataConfig = field(default_factory=DataConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    time_budget_s: float | None = None  # stop training after this many seconds (checkpointed)
    out_dir: str = "runs/pretrain"
