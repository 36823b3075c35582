"""Adaptation methods, one file each; importing this package registers them in ``METHODS``.

Adding a method touches one file: write it here with ``@register_method("name")`` and add
its module to the import list below.
"""

from . import (  # noqa: F401  (each import registers its methods)
    biomedcoop,
    clip_adapter,
    cocoop,
    coop,
    kgcoop,
    linear_probe,
    lora,
    maple,
    pre, prograd,
    promptsrc,
    tip_adapter,
    zeroshot,
    zs_linear_probe,
)
