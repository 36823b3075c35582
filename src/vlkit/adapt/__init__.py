"""Few-shot adaptation of dual encoders: methods, shared feature caching, protocols.

    from vlkit import adapt
    out = adapt.run("coop", "openmoji:subgroup", "runs/moji-lit/model", shots=[1, 4, 16])
    method = adapt.build_method("kgcoop", model, classnames, templates, {"kg_weight": 8.0})
    method.save("out/kgcoop"); adapt.load_method("out/kgcoop", model)

Methods (one file each in :mod:`vlkit.adapt.methods`, registered by name in :data:`METHODS`):
zeroshot, linear_probe, clip_adapter, tip_adapter, tip_adapter_f, coop, coop_csc, cocoop,
kgcoop, maple, lora. The contract is in :mod:`vlkit.adapt.base`, caching in
:mod:`vlkit.adapt.features`, protocols in :mod:`vlkit.adapt.protocols`; the CLI hook is
:func:`vlkit.adapt.cli.add_cli`. Names are imported lazily, so ``vlkit --help`` (which imports
``vlkit.adapt.cli``) does not load torch.
"""

from __future__ import annotations

_LAZY = {
    "AdaptConfig": "api", "make_config": "api", "run": "api",
    "METHODS": "base", "Method": "base", "MethodConfig": "base", "build_config": "base",
    "build_method": "base", "describe_config": "base", "get_method": "base", "load_method": "base",
    "method_names": "base", "register_method": "base",
    "FeatureStore": "features", "text_classifier": "features",
    "DOMAIN_SHIFTS": "protocols", "PROTOCOLS": "protocols",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
