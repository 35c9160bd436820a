"""The ``Attack`` protocol, its input/output records and the registry.

An attack is a class with a ``name``, a ``modality`` (image / text / joint / embedding),
a frozen ``Config`` dataclass, and ``run(model, batch) -> AttackResult``. It is
white-box against the model it is given, touches only the modality it attacks, never
accumulates gradients in model parameters, and restores the model's train/eval mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import torch

from robustmm.errors import RobustMMError
from robustmm.types import Example

MODALITIES = ("image", "text", "joint", "embedding")


@dataclass
class AttackBatch:
    """What an attack perturbs: ``pixels`` (B, 3, H, W) in [0, 1], ``texts`` (B strings),
    ``targets`` (B,) gold candidate indices (the label an untargeted attack moves away from; -100
    where the gold answer is not a candidate), and ``seed``, the run seed from which every random
    draw for an example is derived together with the attack key and the example id
    (:meth:`Attack.example_seeds`). ``protected``: the dataset's protected (label-bearing) words
    that text attacks never substitute (:func:`robustmm.attacks.text.protect.protected_words`);
    each text attack adds the example's own gold answers."""

    examples: Sequence[Example]
    pixels: torch.Tensor
    texts: list[str]
    targets: torch.Tensor
    seed: int = 0
    protected: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class AttackResult:
    """The adversarial batch and per-example facts.

    ``pixels`` (B, 3, H, W) in [0, 1] and ``texts``: the adversarial inputs (equal to the
    clean ones in the modality not attacked); ``scores`` (B, C): the model's candidate
    scores on the adversarial input (for embedding attacks, on the perturbed embeddings);
    ``info``: one dict per example with ``queries`` (forward+backward passes or forward
    queries), ``seconds``, and modality measures (``linf``, ``l2``, ``words_changed``,
    ``words_total``, ``similarity``, ...).
    """

    pixels: torch.Tensor
    texts: list[str]
    scores: torch.Tensor
    info: list[dict[str, Any]] = field(default_factory=list)


class Attack(ABC):
    """Base class of every attack; subclasses set ``name``, ``modality``, ``Config``, ``paper``."""

    name: ClassVar[str]
    modality: ClassVar[str]
    Config: ClassVar[type]
    paper: ClassVar[str] = ""
    threat: ClassVar[str] = ""  # "linf" / "l2" for norm-bounded pixel attacks: which --eps list applies
    white_box: ClassVar[bool] = False  # a gradient attack on pixels: its adversarial images are kept for transfer

    def __init__(self, config=None, **params) -> None:
        if config is not None and params:
            raise RobustMMError(f"Give attack {self.name!r} either a config or parameters, not both.")
        self.config = config if config is not None else make_config(self.Config, params, self.name)
        # the parameters as given (None when built from a config): a copy at another eps rebuilds from them, so
        # values derived from eps (PGD's default step size) are derived again
        self.params = None if config is not None else dict(params)

    def with_eps(self, eps: float) -> "Attack":
        """This attack at another budget ``eps``; defaults derived from eps (e.g. PGD's alpha) follow it
        unless they were given explicitly."""
        if self.params is not None:
            return type(self)(**{**self.params, "eps": float(eps)})
        return type(self)(config=dataclasses.replace(self.config, eps=float(eps)))

    @abstractmethod
    def run(self, model, batch: AttackBatch) -> AttackResult:
        """Attack ``model`` (a VLModel) on ``batch``; see AttackResult."""

    def key(self) -> str:
        """The canonical attack key, e.g. ``pgd-linf(eps=8/255, steps=10, alpha=2/255, random_start=True)``:
        used by records, report, summary.json and gallery file names alike (see :func:`canonical_key`)."""
        return canonical_key(self.name, self.config)

    def example_seeds(self, batch: AttackBatch) -> list[int]:
        """One seed per example of ``batch`` from (run seed, this attack's key, example id) only
        (:mod:`robustmm.seeding`): both members and every batch size get the same draws."""
        from robustmm.seeding import example_seeds

        return example_seeds(batch.seed, self.key(), [e.id for e in batch.examples])

    def covers(self, run_seed: int, example_id: str) -> bool:
        """Whether this attack runs on an example: False outside the seeded subset of a config's ``subset``
        fraction (:func:`robustmm.seeding.in_subset`: the same examples for every attack and member)."""
        from robustmm.seeding import in_subset

        return in_subset(run_seed, example_id, getattr(self.config, "subset", 1.0))


PIXEL_SCALE = {"scale": "pixel"}  # field metadata: a value on the [0, 1] pixel scale, written as k/255 in keys
# field metadata: a pixel-scale value (k/255) while the config's ``norm`` is ``linf``; a decimal otherwise (an L2 radius)
PIXEL_SCALE_LINF = {"scale": "pixel-if-linf"}
IF_SET = {"key": "if-set"}  # field metadata: shown in the key only when it differs from its default


def format_key_value(value: Any, pixel_scale: bool = False) -> str:
    """A config value as written in an attack key: ``8/255`` for a pixel-scale value that is a multiple
    of 1/1000 of 1/255, otherwise at most 6 significant digits (never ``0.00784313725490196``)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if pixel_scale and value != 0:
            k = value * 255
            if abs(k - round(k, 3)) < 1e-9 * max(1.0, abs(k)):
                return f"{round(k, 3):g}/255"
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return "+".join(str(v) for v in value)
    return str(value)


def canonical_key(name: str, config: Any) -> str:
    """``name(field=value, ...)`` over the config's fields in declaration order.

    A field marked ``IF_SET`` is left out while it holds its default (e.g. ``targeted=False``), or
    when the config's ``hidden_in_key()`` names it (a parameter that has no effect in the current
    mode, such as ``target`` of an untargeted attack). Pixel-scale fields are written as fractions
    of 255 (:func:`format_key_value`); ``PIXEL_SCALE_LINF`` fields only while ``norm`` is ``linf``.
    """
    hidden = set(config.hidden_in_key()) if hasattr(config, "hidden_in_key") else set()
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in hidden:
            continue
        if f.metadata.get("key") == "if-set" and f.default is not dataclasses.MISSING and value == f.default:
            continue
        scale = f.metadata.get("scale")
        pixel = scale == "pixel" or (scale == "pixel-if-linf" and getattr(config, "norm", "linf") == "linf")
        parts.append(f"{f.name}={format_key_value(value, pixel)}")
    return f"{name}({', '.join(parts)})"


_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add an attack to the registry (a duplicate name is refused)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"attack {cls.name!r} is registered twice")
    if cls.modality not in MODALITIES:
        raise ValueError(f"attack {cls.name!r} has unknown modality {cls.modality!r}")
    _REGISTRY[cls.name] = cls
    return cls


def list_attacks(modality: str | None = None) -> list[str]:
    """Registered attack names (optionally of one modality), sorted."""
    _load_builtin()
    return sorted(n for n, c in _REGISTRY.items() if modality is None or c.modality == modality)


def attack_class(name: str) -> type[Attack]:
    _load_builtin()
    if name not in _REGISTRY:
        raise RobustMMError(f"Unknown attack {name!r}: choose from {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def get_attack(name: str, **params) -> Attack:
    """Build a registered attack from keyword parameters (strings such as ``"8/255"`` accepted)."""
    return attack_class(name)(**params)


def parse_number(text: str | int | float, what: str = "value") -> float:
    """``"8/255"``, ``"0.03"``, ``"1e-2"`` or a number -> float; anything else is a RobustMMError.

    Only plain decimals and fractions are accepted (no ``eval``).
    """
    if isinstance(text, bool):
        raise RobustMMError(f"{what} must be a number, not {text!r}.")
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(fractions.Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise RobustMMError(f"{what} must be a number or a fraction such as 8/255, not {text!r}.") from None


def _coerce(value: Any, kind: Any, what: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if kind_name.startswith("bool"):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise RobustMMError(f"{what} must be true or false, not {value!r}.")
    if kind_name.startswith("int"):
        number = parse_number(value, what)
        if number != int(number):
            raise RobustMMError(f"{what} must be a whole number, not {value!r}.")
        return int(number)
    if kind_name.startswith("float"):
        return parse_number(value, what)
    if kind_name.startswith("str"):
        return str(value)
    if kind_name.startswith("tuple"):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split("+") if v]
        return tuple(str(v) for v in items)
    return value


def make_config(config_cls: type, params: dict[str, Any], attack_name: str):
    """Build ``config_cls`` from loosely typed params, refusing unknown names with one sentence."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise RobustMMError(f"Attack {attack_name!r} has no parameter {unknown[0]!r}; it takes {', '.join(fields)}.")
    values = {k: _coerce(v, fields[k].type, f"{attack_name} parameter {k}") for k, v in params.items()}
    try:
        return config_cls(**values)
    except TypeError as err:
        raise RobustMMError(f"Attack {attack_name!r} got invalid parameters ({err}).") from err


def parse_attack_spec(spec: str) -> Attack:
    """``"pgd-linf:eps=8/255,steps=10"`` -> attack instance (name, then comma-separated key=value)."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RobustMMError(f"Attack parameter {item!r} in {spec!r} is not of the form key=value.")
        params[key.strip()] = value.strip()
    return get_attack(name.strip(), **params)


# ---------------------------------------------------------------------------
# Helpers shared by the attack modules (no state kept between calls)
# ---------------------------------------------------------------------------


def check_batch(batch: AttackBatch) -> None:
    """Refuse a batch whose pixels, texts and targets do not line up (one sentence each)."""
    pixels = batch.pixels
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise RobustMMError(f"Attack batch pixels must be a (B, 3, H, W) tensor, not {shape}.")
    if not pixels.is_floating_point():
        raise RobustMMError(f"Attack batch pixels must be floats in [0, 1], not {pixels.dtype}.")
    if len(batch.examples) != pixels.shape[0]:
        raise RobustMMError(f"Attack batch has {len(batch.examples)} examples for {pixels.shape[0]} images; give one "
                            "Example per row (its id seeds the attack's random draws).")
    if pixels.shape[0] != len(batch.texts) or tuple(batch.targets.shape) != (pixels.shape[0],):
        raise RobustMMError(
            f"Attack batch has {pixels.shape[0]} images, {len(batch.texts)} texts and targets of shape "
            f"{tuple(batch.targets.shape)}; they must all have the same length B."
        )
    if pixels.numel() and (float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0):
        raise RobustMMError("Attack batch pixels must lie in [0, 1] (normalisation happens inside the model).")


def empty_result(model, batch: AttackBatch) -> AttackResult:
    """The result for a batch with no examples: nothing to attack, scores of shape (0, C)."""
    scores = torch.zeros(0, len(model.candidates), device=model.device)
    return AttackResult(batch.pixels, [], scores, [])


def check_finite(value: float, what: str, low: float = 0.0, high: float = math.inf, low_open: bool = False) -> None:
    """RobustMMError unless ``low <= value <= high`` (``low < value`` when ``low_open``) and finite."""
    if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        upper = f" and <= {high:g}" if math.isfinite(high) else ""
        raise RobustMMError(f"{what} must be a finite number {bound}{upper}, not {value!r}.")


@contextlib.contextmanager
def attack_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run a block with ``model`` in eval mode and its parameters frozen; restore both afterwards.

    Every submodule's own ``training`` flag and every parameter's ``requires_grad`` flag is
    put back exactly as found (a model with a frozen eval backbone and a training prompt
    module stays that way). Freezing means gradients flow only to the attacked inputs, so
    parameter ``.grad`` fields are never touched.
    """
    modes = [(module, module.training) for module in model.modules()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for p in trainable:
            p.requires_grad_(True)


class Stopwatch:
    """Wall time of a block in seconds, synchronising CUDA so queued kernels are counted."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "Stopwatch":
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


def per_example_norms(delta: torch.Tensor) -> tuple[list[float], list[float]]:
    """L∞ and L2 norms of each example's perturbation; ``delta`` (B, ...) -> two lists of B floats."""
    flat = delta.detach().float().flatten(1)
    if flat.shape[1] == 0:
        zeros = [0.0] * flat.shape[0]
        return zeros, list(zeros)
    return flat.abs().amax(dim=1).tolist(), flat.norm(p=2, dim=1).tolist()


def _load_builtin() -> None:
    """Import the modules that register the built-in attacks (lazily: they import torchattacks etc. only when run)."""
    import importlib

    for module in ("image", "apgd", "square", "ensemble", "embedding", "text", "joint"):
        try:
            importlib.import_module(f"robustmm.attacks.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"robustmm.attacks.{module}":
                raise
