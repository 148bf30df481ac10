"""Knobs: the settings a strategy owns, declared once on its class.

A strategy lists its knobs (`Strategy.knobs`); registering the strategy declares them here, and from
then on every reader takes them from this one place: `RunConfig` (keys, types, ranges, `-s key=value`),
the run hash (a run hashes only its own strategy's knobs, so an FT run is one run whatever `lp_epochs`
says), grids, the notebook's parameters cell, `studylib config` and `studylib strategies`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

Range = tuple[str, Callable[[Any], bool]]  # (the words a message gives, the test)


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[float], bool]:
    """A range test: low <= v <= high, either end open when asked.

    Args:
        low: lower bound.
        high: upper bound.
        low_open: exclude `low` itself.
        high_open: exclude `high` itself.
    """
    def inside(v: float) -> bool:
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return inside


AT_LEAST_1: Range = ("at least 1", lambda v: v >= 1)
AT_LEAST_0: Range = ("0 or more", lambda v: v >= 0)
POSITIVE: Range = ("greater than 0", lambda v: v > 0)
ANY: Range = ("any value", lambda v: True)


@dataclasses.dataclass(frozen=True)
class Knob:
    """One setting of a strategy: its name, default (whose type is the knob's type), help and valid range.

    role: `tuned` (chosen on validation per run: a sweep over it is the strategy's tuning budget) or
    `method` (a variant compared as an arm of its own, e.g. Auto-RGN's `rgn_max_over`).
    choices: the valid values of a text knob (empty: any text).
    """

    name: str
    default: Any
    help: str
    valid: Range = ANY
    role: str = "tuned"
    choices: tuple[str, ...] = ()

    @property
    def type(self) -> type:
        return type(self.default)

    def problem(self, value: Any) -> str:
        """Why `value` is not valid for this knob ('' when it is)."""
        if self.choices and value not in self.choices:
            return f"is not valid; choose one of {', '.join(self.choices)}"
        if not self.valid[1](value):
            return f"is out of range; set {self.name} to {self.valid[0]}"
        return ""


KNOBS: dict[str, Knob] = {}  # every declared knob, in declaration order
OWNERS: dict[str, list[str]] = {}  # knob name -> the strategies that read it


def declare(owner: str, knobs: tuple[Knob, ...], reserved: set[str]) -> None:
    """Declare `owner`'s knobs. A knob shared by several strategies (the SP strategies' `sp_beta`) is
    one declaration on their common base class; a different knob under a taken name is refused."""
    for knob in knobs:
        if knob.name in reserved:
            raise ValueError(f"strategy {owner!r}: knob {knob.name!r} is a RunConfig field; choose another name")
        if KNOBS.get(knob.name, knob) != knob:
            raise ValueError(f"strategy {owner!r}: knob {knob.name!r} is already declared differently by "
                             f"{', '.join(OWNERS[knob.name])}; choose another name or share one declaration")
        if knob.role not in ("tuned", "method"):
            raise ValueError(f"knob {knob.name!r}: role must be tuned or method, got {knob.role!r}")
        KNOBS[knob.name] = knob
        OWNERS.setdefault(knob.name, [])
        if owner not in OWNERS[knob.name]:
            OWNERS[knob.name].append(owner)


def withdraw(owner: str) -> None:
    """Forget `owner`'s claim on its knobs (a strategy unregistered); a knob nobody reads goes."""
    for name in [n for n, owners in OWNERS.items() if owner in owners]:
        OWNERS[name].remove(owner)
        if not OWNERS[name]:
            del OWNERS[name], KNOBS[name]


def help_line(name: str) -> str:
    """'lp_ft: epochs of the linear-probing stage': the help, prefixed by the strategies that read it."""
    return f"{', '.join(OWNERS[name])}: {KNOBS[name].help}"
