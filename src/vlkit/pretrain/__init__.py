"""Pretrain or align a dual encoder: ``vlkit pretrain CONFIG [key=value ...]``.

Recipes live in ``configs/pretrain/``; see :class:`PretrainConfig` for every key.
"""

from .config import DataConfig, EvalConfig, PretrainConfig
from .runner import PretrainResult, load_config, run

__all__ = ["PretrainConfig", "DataConfig", "EvalConfig", "PretrainResult", "load_config", "run"]
