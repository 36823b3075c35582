"""The adaptation-method contract, the method registry, and adapter save/load.

A method (docs/architecture.md, "Methods") is built from a frozen :class:`DualEncoder`, its
config dataclass and the class names/templates of the task; ``forward(batch)`` returns
``{"logits", "*_loss", ...}`` (the engine sums the ``_loss`` keys); ``trainable_parameters()``
lists what the optimizer updates; ``state_dict()`` holds the adapter only.

Why the model is *not* a submodule: the frozen DualEncoder is shared by every method and seed
of a run, it must never appear in an adapter checkpoint, and ``method.train()`` must not flip
its frozen parts out of eval mode. The method keeps a plain reference (``method.model``) and the
training task moves it to the device. Anything a method learns lives in its own modules, even
LoRA's low-rank factors (the wrappers that apply them to the towers are swapped in only while
the method runs, so other methods of the same run see the untouched model).

A batch is ``{"labels": (B,) long}`` plus either ``"image_embeds"`` ((B, D) projected features
of the frozen image path before L2 normalisation, from the shared cache; CLIP-Adapter acts on
them unnormalised, as its paper) or ``"images"`` ((B, 3, H, W)) for
methods whose :meth:`Method.uses_image_tower` is true (MaPLe's vision prompts, LoRA on the image
tower): those cannot use cached features and run the image tower every step.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import config as vconfig
from ..errors import UserError, missing_file
from ..registry import Registry

FORMAT = "vlkit.adapter"
METHODS: Registry = Registry("adaptation method")
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def help_field(default: Any, help: str) -> Any:
    """A dataclass field whose help text is written once, next to its default."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def describe_config(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) of every field of a method config (``vlkit adapt --list-keys``)."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, default, f.metadata.get("help", "")))
    return out


SELECTIONS = ("last", "val")


@dataclass
class AugmentConfig:
    """The training images' augmentation of a method's reference (where the dataset allows it)."""

    aug_scale: list[float] = help_field(
        [0.08, 1.0], "random-resized-crop scale range of the training images (Dassl's default: 0.08-1)")
    flip: bool = help_field(True, "random horizontal flip, applied only where the dataset declares flips safe")


@dataclass
class MethodConfig(AugmentConfig):
    """The optimisation recipe every trained method has; each method sets its reference's values.

    The defaults are the Dassl trainer's (CoOp family): SGD with momentum 0.9 and weight decay
    5e-4, one constant warm-up epoch at 1e-5, cosine; the last epoch's model is reported.
    """

    epochs: int | None = help_field(
        None, "training epochs; None: the paper's schedule for the shot count, times the run's budget")
    batch_size: int = help_field(32, "training batch size (clamped to the number of training samples)")
    optimizer: str = help_field("sgd", "optimizer: sgd, adamw or lion (vlkit.engine.optim)")
    lr: float = help_field(2e-3, "base learning rate")
    weight_decay: float = help_field(5e-4, "weight decay (sgd: L2 in the gradient; adamw, lion: decoupled)")
    momentum: float = help_field(0.9, "sgd momentum")
    betas: list[float] = help_field([0.9, 0.999], "adamw / lion betas (torch's AdamW default: 0.9, 0.999)")
    eps: float = help_field(1e-8, "adamw epsilon (torch's default: 1e-8)")
    schedule: str = help_field("const_warmup_cosine", "lr schedule: const_warmup_cosine (Dassl), cosine or constant")
    warmup_epochs: int = help_field(1, "warm-up epochs (Dassl: 1 epoch at a constant 1e-5)")
    min_lr: float = help_field(0.0, "lr at the end of the cosine")
    selection: str = help_field(
        "last", "model reported: last (the final epoch, Dassl's last_step) or val (best validation epoch)")


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name`` (duplicates raise)."""

    def deco(cls):
        cls.name = name
        METHODS.add(name, cls)
        return cls

    return deco


def get_method(name: str) -> type["Method"]:
    from . import methods  # noqa: F401  (importing fills the registry)

    return METHODS.get(name)


def method_names() -> list[str]:
    from . import methods  # noqa: F401

    return METHODS.names()


def build_config(method: str | type["Method"], options: dict | None = None):
    """The method's config from a mapping; unknown keys and bad values raise a one-line UserError."""
    cls = get_method(method) if isinstance(method, str) else method
    cfg = vconfig.build(cls.Config, options or {}, prefix=f"{cls.name}.")
    check_config(cfg, cls.name)
    return cfg


def check_config(cfg, name: str) -> None:
    """Refuse values the dataclass types let through: a model selection, a crop scale, betas."""
    selection = getattr(cfg, "selection", "last")
    if selection not in SELECTIONS:
        raise UserError(f"{name}.selection={selection!r} is not one of {', '.join(SELECTIONS)}")
    scale = list(getattr(cfg, "aug_scale", [1.0, 1.0]))
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise UserError(f"{name}.aug_scale={scale} must be two numbers with 0 < low <= high <= 1, e.g. [0.08, 1.0]")
    betas = list(getattr(cfg, "betas", [0.9, 0.999]))
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise UserError(f"{name}.betas={betas} must be two numbers in [0, 1), e.g. [0.9, 0.999]")


def check_token_access(model, towers: Sequence[str], method: str) -> None:
    """Raise a one-line UserError when a method needs the insides of a tower that has none."""
    for tower in towers:
        obj = model.visual if tower == "vision" else model.text
        if not getattr(obj, "supports_prompts", False):
            raise UserError(
                f"method {method!r} needs token access to the {tower} tower, but this model's "
                f"{getattr(obj, 'kind', type(obj).__name__)} {tower} tower has none; use a model whose "
                f"{tower} tower is transformer-based (e.g. preset:moji-lit-s or preset:tiny-clip)"
            )


class Method(nn.Module):
    """Base class of every adaptation method (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    needs_tokens: ClassVar[tuple[str, ...]] = ()  # towers whose insides the method uses
    trainable: ClassVar[bool] = True  # False: training-free (zeroshot, tip_adapter)
    # what ``prepare`` gets of the training images: "views" (cached augmented views, (V, N, D)),
    # "eval" (the eval transform's features, (1, N, D): the CLIP/CoOp linear probe) or "none"
    train_features: ClassVar[str] = "views"
    class_agnostic: ClassVar[bool] = True  # False: learns per-class parameters (no new classes)

    def __init__(self, model, config=None, classnames: Sequence[str] = (), templates: Sequence[str] | None = None):
        super().__init__()
        if not classnames:
            raise UserError(f"method {self.name!r} needs class names; pick a labelled view, "
                            "e.g. --data openmoji:subgroup")
        object.__setattr__(self, "_model", model)  # a plain reference, not a submodule (see module doc)
        model.freeze("all")
        self.config = config if config is not None else self.Config()
        self.classnames = [str(c) for c in classnames]
        self.templates = [str(t) for t in (templates or DEFAULT_TEMPLATES)]
        check_token_access(model, self.token_towers(), self.name)

    # -- what the runner asks ---------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    def token_towers(self) -> tuple[str, ...]:
        """Towers whose tokens this instance uses (LoRA: depends on its config)."""
        return tuple(self.needs_tokens)

    def is_class_agnostic(self) -> bool:
        return self.class_agnostic

    def uses_image_tower(self) -> bool:
        """True when image features cannot come from the cache (the image path is adapted)."""
        return False

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @classmethod
    def paper_schedule(cls, shots: int) -> dict[str, int]:
        """``{"epochs": n}`` or ``{"steps": n}``: the paper's training length for ``shots``."""
        return {"epochs": 1}

    def prepare(self, train_views: torch.Tensor, labels: torch.Tensor) -> None:
        """Called once before training with the cached training features (V, N, D) and labels."""

    def tune(self, val_features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Choose inference hyperparameters on validation features (never test); {} by default."""
        return {}

    def describe_selection(self, selection: str | None) -> str:
        """What the results table says about the model reported (``selection``: last, val or None)."""
        return {"last": "last epoch", "val": "best validation epoch", None: "none (training-free)"}[selection]

    # -- computing ----------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().exp()

    def image_embeds(self, batch: dict) -> torch.Tensor:
        """(B, D) projected image features before normalisation: cached, or from the frozen image path."""
        if "image_embeds" in batch:
            return batch["image_embeds"]
        with torch.no_grad():
            return self.model.encode_image(batch["images"], normalize=False)

    def image_features(self, batch: dict) -> torch.Tensor:
        """(B, D) L2-normalised image features (what CLIP compares with text)."""
        return F.normalize(self.image_embeds(batch), dim=-1)

    def logits(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.logits(batch)
        return with_ce({"logits": logits}, batch)

    # -- adapter state -------------------------------------------------------------------------
    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_adapter(self, state: dict[str, torch.Tensor]) -> None:
        self.resize_for(state)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise UserError(f"adapter state does not fit method {self.name!r} with {self.n_classes} classes "
                            f"({str(e).splitlines()[0][:160]}); {self.transfer_hint()}") from None

    def resize_for(self, state: dict[str, torch.Tensor]) -> None:
        """Give data-sized buffers (Tip-Adapter's cache) the shapes of a state before loading."""

    def transfer_hint(self) -> str:
        return "load it with the class names it was trained on"

    def transfer(self, classnames: Sequence[str], templates: Sequence[str] | None = None) -> "Method":
        """This adapter for other classes (new classes, another dataset); raises if it learned
        per-class parameters (linear probe, CSC context, Tip-Adapter's cache)."""
        if list(classnames) == self.classnames and (templates is None or list(templates) == self.templates):
            return self
        if not self.is_class_agnostic():
            raise UserError(f"method {self.name!r} learns per-class parameters, so it cannot classify other "
                            "classes; use a prompt or adapter method (coop, cocoop, kgcoop, prograd, pre, "
                            "biomedcoop, maple, promptsrc, lora, clip_adapter)")
        other = type(self)(self.model, self.config, classnames, templates or self.templates)
        other.load_adapter(self.adapter_tensors())
        return other.to(self.logit_scale.device)

    def save(self, path: str | Path) -> Path:
        """``adapter.safetensors`` (the adapter state) + ``method.json`` (how to rebuild it)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "method": self.name, "config": vconfig.to_dict(self.config),
                "classnames": self.classnames, "templates": self.templates,
                "model_fingerprint": self.model.fingerprint()}
        save_file(self.adapter_tensors(), str(path / "adapter.safetensors"), metadata={"format": FORMAT})
        (path / "method.json").write_text(json.dumps(meta, indent=2))
        return path


def with_ce(out: dict, batch: dict) -> dict:
    """Add the cross-entropy term when the batch has labels (evaluation batches may not)."""
    if "labels" in batch:
        out["ce_loss"] = F.cross_entropy(out["logits"], batch["labels"])
    return out


def build_method(name: str, model, classnames: Sequence[str], templates: Sequence[str] | None = None,
                 options=None) -> Method:
    """The registry lookup plus the typed config: ``build_method("coop", model, names, tpl, {"n_ctx": 4})``
    (``options``: a mapping, or an instance of the method's config dataclass)."""
    cls = get_method(name)
    config = options if isinstance(options, cls.Config) else build_config(cls, options)
    return cls(model, config, classnames, templates)


def load_method(path: str | Path, model) -> Method:
    """Rebuild a saved method around ``model`` and load its adapter state (bit-exact)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_file, weights = path / "method.json", path / "adapter.safetensors"
    if not meta_file.is_file():
        raise missing_file(meta_file, "saved method", "give a directory written by Method.save")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a saved vlkit adapter (format {meta.get('format')!r})")
    if meta.get("model_fingerprint") not in (None, model.fingerprint()):
        warnings.warn(f"vlkit: the adapter in {path} was trained on model {meta['model_fingerprint']}, "
                      f"not on this one ({model.fingerprint()}); its logits will differ", stacklevel=2)
    method = build_method(meta["method"], model, meta["classnames"], meta["templates"], meta["config"])
    if not weights.is_file():
        raise missing_file(weights, "adapter weights", "save the method again")
    method.load_adapter(load_file(str(weights)))
    return method
