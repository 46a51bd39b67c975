"""Name -> class registries for weightings and architectures.

``--weighting NAME`` and ``--arch NAME`` resolve through these. Each registered class may
declare ``hyperparameters``: a tuple of :class:`Hyperparameter`; ``config.py`` turns them into
command-line flags and ``prepare_args`` collects the chosen method's values into
``weight_args`` / ``arch_args``.
"""
from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence


@dataclass(frozen=True)
class Hyperparameter:
    """One method option: a ``weight_args``/``arch_args`` key and the CLI flag ``--name``."""

    name: str
    default: Any
    help: str
    type: Optional[Callable[[str], Any]] = None
    nargs: Optional[str] = None
    choices: Optional[Sequence[Any]] = None
    #: Allowed range of a numeric value: ``minimum``/``maximum`` bounds (None: unbounded),
    #: excluded from the range when ``exclusive_minimum``/``exclusive_maximum``.
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    #: Whether ``inf``/``-inf`` is a meaningful value (say what it means in ``help``); NaN never is.
    allow_infinite: bool = False

    def value_type(self) -> Callable[[str], Any]:
        if self.type is not None:
            return self.type
        if self.default is None:
            return str
        return type(self.default)

    def range_text(self) -> Optional[str]:
        """The allowed range as text (``'> 0'``, ``'in [0, 1)'``...), or None when unbounded.

        >>> Hyperparameter("rgb_mu", 0.9, "EMA factor", minimum=0, maximum=1, exclusive_maximum=True).range_text()
        'in [0, 1)'
        >>> Hyperparameter("rgb_lr", 1.0, "inner step size", minimum=0, exclusive_minimum=True).range_text()
        '> 0'
        """
        if self.minimum is None and self.maximum is None:
            return None
        low, high = (f"{bound:g}" if isinstance(bound, float) else bound for bound in (self.minimum, self.maximum))
        if self.maximum is None:
            return f"{'>' if self.exclusive_minimum else '>='} {low}"
        if self.minimum is None:
            return f"{'<' if self.exclusive_maximum else '<='} {high}"
        return f"in {'(' if self.exclusive_minimum else '['}{low}, {high}{')' if self.exclusive_maximum else ']'}"

    def problem(self, item: Any) -> Optional[str]:
        """None when the single number ``item`` is allowed, else what it must be
        (``'must be > 0'``, ``'must be a finite number >= 0'``). Non-numbers pass.

        >>> Hyperparameter("rgb_lr", 1.0, "", minimum=0, exclusive_minimum=True).problem(float("inf"))
        'must be a finite number > 0'
        """
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return None
        range_text = self.range_text()
        if math.isnan(item) or (math.isinf(item) and not self.allow_infinite):
            return "must be a finite number" + (f" {range_text}" if range_text else "")
        too_low = self.minimum is not None and (item <= self.minimum if self.exclusive_minimum else item < self.minimum)
        too_high = self.maximum is not None and (item >= self.maximum if self.exclusive_maximum else item > self.maximum)
        return f"must be {range_text}" if too_low or too_high else None

    def check(self, value: Any) -> Any:
        """``value`` if it lies in the declared range and is finite (each element for lists;
        ``inf`` only where :attr:`allow_infinite`); else ``ValueError`` that names the flag and
        the range."""
        for item in value if isinstance(value, (list, tuple)) else [value]:
            problem = self.problem(item)
            if problem:
                raise ValueError(f"--{self.name} {problem}, got {item!r}")
        return value


class Registry:
    """A case-sensitive map from public names (LibMTL's: ``EW``, ``HPS``...) to classes.

    ``get`` also resolves, as LibMTL does, a class that is an attribute of the package
    ``LibMTL_rgb.<kind>`` without being registered (``weighting.MyMethod = MyMethod``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, cls: Optional[type] = None, *, name: Optional[str] = None):
        """Register ``cls`` under ``name`` (default: the class name). Usable as a decorator."""

        def add(c: type) -> type:
            key = name or c.__name__
            previous = self._classes.get(key)
            if previous is not None and previous is not c:
                raise ValueError(f"{self.kind} {key!r} is already registered as {previous!r}")
            self._classes[key] = c
            return c

        return add(cls) if cls is not None else add

    def get(self, name_or_class: "str | type") -> type:
        """Resolve a registered name (or pass a class through). Unknown names list the known ones."""
        if isinstance(name_or_class, type):
            return name_or_class
        found = self._classes.get(name_or_class) or self._from_package(name_or_class)
        if found is None:
            raise ValueError(unknown_name_message(self.kind, name_or_class, self.names()))
        return found

    def _from_package(self, name: str) -> Optional[type]:
        """A weighting/architecture class named ``name`` in ``LibMTL_rgb.<kind>``'s namespace."""
        from LibMTL_rgb.libmtl_compat import is_method_class  # late: it imports the packages

        package = sys.modules.get(f"LibMTL_rgb.{self.kind}")
        found = getattr(package, name, None) if isinstance(name, str) else None
        return found if is_method_class(found, self.kind) else None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def items(self):
        return sorted(self._classes.items())

    def __contains__(self, name: object) -> bool:
        return name in self._classes or (isinstance(name, str) and self._from_package(name) is not None)


def unknown_name_message(kind: str, name: str, known: Sequence[str]) -> str:
    """``unknown weighting 'rgb' (did you mean 'RGB'?); known weightings: ...`` (the suggestion:
    the closest known name, ignoring case, by ``difflib``)."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; known {kind}s: {', '.join(known)}"


WEIGHTINGS = Registry("weighting")
ARCHITECTURES = Registry("architecture")


def hyperparameters_of(cls: type) -> tuple[Hyperparameter, ...]:
    """The hyper-parameters a class declares, including those of its bases (first wins)."""
    seen: dict[str, Hyperparameter] = {}
    for klass in cls.__mro__:
        for hp in vars(klass).get("hyperparameters", ()):
            seen.setdefault(hp.name, hp)
    return tuple(seen.values())
