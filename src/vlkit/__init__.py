"""vlkit: vision-language representation learning with dual-encoder (CLIP-style) models.

Align or pretrain a dual encoder, adapt it from a few examples, evaluate it honestly.
"""

__version__ = "0.1.0"
