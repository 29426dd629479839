"""The method registry: a fusion method's name, family, citation, dimensions and parameters.

Each fusion module registers its functions with :func:`register_method`. A method is a
function ``fn(a, b, **parameters) -> fused`` on two float tensors of the same 2-D or 3-D
shape with values in ``[0, 1]``; it returns a tensor of that shape on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError

FusionFunction = Callable[..., torch.Tensor]

_TYPES: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str}


@dataclass(frozen=True)
class Parameter:
    """One tunable option of a method.

    Args:
        name: keyword the method function takes.
        type: ``"float"``, ``"int"``, ``"bool"`` or ``"str"``.
        default: the value the method's paper uses.
        min, max: inclusive range for numbers (``None`` when unbounded).
        choices: allowed values for strings.
        help: one line for the user.
    """

    name: str
    type: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"parameter {self.name}: unknown type {self.type!r}")
        self.validate(self.default, method="<registry>")

    def parse(self, text: str, *, method: str) -> Any:
        """Convert a command-line string to this parameter's type."""
        try:
            if self.type == "bool":
                lowered = text.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                return lowered in ("1", "true", "yes", "on")
            if self.type == "int":
                value = float(text)
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return _TYPES[self.type](text)
        except ValueError:
            raise ParameterError(
                f"{method}: parameter {self.name!r} expects {self.type}, got {text!r}"
            ) from None

    def validate(self, value: Any, *, method: str) -> Any:
        """Check type and range; return the value converted to the declared type.

        Numbers of another numeric type are converted when no information is lost (an ``int``
        or NumPy number for a float, an integral float for an int); booleans are never numbers.
        """
        expected = _TYPES[self.type]
        value = _plain(value)
        if self.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > 1e308:
                raise ParameterError(f"{method}: parameter {self.name!r} must be finite, got {value!r}")
            value = float(value)
        if self.type == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ParameterError(f"{method}: parameter {self.name!r} expects {self.type}, got {value!r}")
        if self.type == "float" and not math.isfinite(value):
            raise ParameterError(f"{method}: parameter {self.name!r} must be finite, got {value!r}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise ParameterError(
                f"{method}: parameter {self.name!r}={value!r} is out of range "
                f"[{_bound(self.min)}, {_bound(self.max)}]"
            )
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(map(str, self.choices[:12])) + (", ..." if len(self.choices) > 12 else "")
            raise ParameterError(f"{method}: parameter {self.name!r}={value!r} is not one of: {shown}")
        return value

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: name, type, default, and min/max or choices."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.default}
        if self.min is not None or self.max is not None:
            out["min"], out["max"] = self.min, self.max
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.help:
            out["help"] = self.help
        return out


def _bound(value: float | None) -> str:
    return "inf" if value is None else f"{value:g}"


def _plain(value: Any) -> Any:
    """NumPy scalars (``np.float32(0.5)``, ``np.int64(3)``, ``np.bool_``) as Python ones."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class FusionMethod:
    """A registered fusion method.

    Args:
        name: registry key (``medfusion fuse --method NAME``).
        family: ``"pixel"``, ``"multiscale"``, ``"wavelet"``, ``"edge_preserving"``,
            ``"pcnn"`` or (later) ``"cnn"``.
        citation: the paper the implementation follows.
        dims: spatial dimensionalities supported.
        parameters: the tunable options with the paper's defaults.
        function: the implementation (see module docstring).
        halo: voxels of context a slab needs on each side for the result to equal the
            whole-volume computation, as a function of the parameters; ``None`` when the
            method uses global image statistics and must see the whole volume.
        alignment: slab starts must be multiples of this (e.g. ``2**levels`` for pyramids).
    """

    name: str
    family: str
    citation: str
    dims: tuple[int, ...]
    parameters: tuple[Parameter, ...]
    function: FusionFunction
    halo: Callable[[Mapping[str, Any]], int] | None = None
    alignment: Callable[[Mapping[str, Any]], int] = field(default=lambda params: 1)
    summary: str = ""

    def with_modality_pair(self, parameters: dict[str, Any], pair: str | None) -> dict[str, Any]:
        """``parameters`` with the ``pair`` option set to ``pair`` when this method keeps one set of
        weights per modality pair (``gain_fusion_net``) and has weights for it; else unchanged."""
        option = next((p for p in self.parameters if p.name == "pair"), None)
        if option is None or pair not in (option.choices or ()):
            return parameters
        return {**parameters, "pair": pair}

    def resolve_parameters(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``given``, validated; unknown names are refused.

        Raises:
            ParameterError: ``given`` is not a mapping, names an unknown parameter, or has a value
                of the wrong type or out of range.
        """
        if given is not None and not isinstance(given, Mapping):
            raise ParameterError(
                f"{self.name}: parameters must be a mapping of name to value (a dict), got {type(given).__name__}"
            )
        given = dict(given or {})
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(given) - set(known), key=str)
        if unknown:
            names = ", ".join(known) or "none"
            raise ParameterError(f"{self.name}: unknown parameter {unknown[0]!r} (parameters: {names})")
        return {name: p.validate(given.get(name, p.default), method=self.name) for name, p in known.items()}

    def parse_parameters(self, assignments: Sequence[str]) -> dict[str, Any]:
        """Parse ``KEY=VALUE`` strings from the command line (not yet range-checked)."""
        if isinstance(assignments, str) or not isinstance(assignments, Sequence):
            raise ParameterError(f"{self.name}: expected a list of KEY=VALUE strings, got {assignments!r}")
        known = {p.name: p for p in self.parameters}
        parsed: dict[str, Any] = {}
        for item in assignments:
            if not isinstance(item, str):
                raise ParameterError(f"--set expects KEY=VALUE, got {item!r}")
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ParameterError(f"--set expects KEY=VALUE, got {item!r}")
            if key not in known:
                names = ", ".join(known) or "none"
                raise ParameterError(f"{self.name}: unknown parameter {key!r} (parameters: {names})")
            parsed[key] = known[key].parse(value, method=self.name)
        return parsed

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, family, citation, dims and parameters."""
        return {
            "name": self.name,
            "family": self.family,
            "citation": self.citation,
            "dims": list(self.dims),
            "summary": self.summary,
            "parameters": [p.describe() for p in self.parameters],
        }


_REGISTRY: dict[str, FusionMethod] = {}


def register_method(
    name: str,
    *,
    family: str,
    citation: str,
    parameters: Sequence[Parameter] = (),
    dims: Sequence[int] = (2, 3),
    halo: Callable[[Mapping[str, Any]], int] | None = None,
    alignment: Callable[[Mapping[str, Any]], int] | None = None,
) -> Callable[[FusionFunction], FusionFunction]:
    """Decorator that adds a fusion function to the registry under ``name``.

    The first paragraph of the function's docstring becomes the method's summary.
    """

    def decorate(function: FusionFunction) -> FusionFunction:
        if name in _REGISTRY:
            raise ValueError(f"fusion method {name!r} registered twice")
        summary = (function.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        _REGISTRY[name] = FusionMethod(
            name=name,
            family=family,
            citation=citation,
            dims=tuple(dims),
            parameters=tuple(parameters),
            function=function,
            halo=halo,
            alignment=alignment or (lambda params: 1),
            summary=" ".join(summary.split()),
        )
        return function

    return decorate


def get_method(name: str) -> FusionMethod:
    """The registered method called ``name``; a clear error for an unknown name."""
    from . import _load_all

    if not isinstance(name, str):
        raise ParameterError(f"a fusion method is given by its name (a string), got {type(name).__name__}")
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(
            f"unknown fusion method {name!r} (known: {', '.join(sorted(_REGISTRY))})"
        ) from None


def list_methods() -> list[FusionMethod]:
    """All registered methods in registration order."""
    from . import _load_all

    _load_all()
    return list(_REGISTRY.values())
