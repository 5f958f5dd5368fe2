"""Strict params loading: unknown, missing and mistyped keys are errors naming the key; flags override."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipeline.core.config import from_dict, recorded_when_set, replace, to_dict
from pipeline.core.errors import ConfigError, HydraMixError


@dataclass(frozen=True)
class Inner:
    size: int
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    rate: float
    mode: Literal["a", "b"]
    inner: Inner
    limit: int | None = None
    weights: dict[str, float] = field(default_factory=dict)
    flag: bool = False

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError("rate must be >= 0")


GOOD = {"rate": 1, "mode": "a", "inner": {"size": 3, "names": ["x", "y"]}, "weights": {"w": 2}}


def test_round_trip_and_conversions():
    cfg = from_dict(Outer, GOOD)
    assert cfg.rate == 1.0 and isinstance(cfg.rate, float)
    assert cfg.inner == Inner(3, ("x", "y")) and cfg.limit is None and cfg.weights == {"w": 2.0}
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**GOOD, "colour": 1}, r"unknown key\(s\) colour"),
        ({k: v for k, v in GOOD.items() if k != "rate"}, "missing key 'rate'"),
        ({**GOOD, "rate": "fast"}, r"p\.rate: expected a number"),
        ({**GOOD, "mode": "c"}, r"p\.mode: 'c' is not one of"),
        ({**GOOD, "inner": {"size": True}}, r"p\.inner\.size: expected an integer"),
        ({**GOOD, "inner": {"size": 1, "names": "x"}}, r"p\.inner\.names: expected a list"),
        ({**GOOD, "flag": "yes"}, r"p\.flag: expected true/false"),
        ({**GOOD, "rate": -1}, "rate must be >= 0"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_params_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(Outer, data, where="p")
    assert isinstance(info.value, HydraMixError)


def test_replace_skips_none():
    cfg = from_dict(Outer, GOOD)
    assert replace(cfg, rate=None) is cfg
    assert replace(cfg, rate=2.0, limit=None).rate == 2.0


@dataclass(frozen=True)
class Extended:
    size: int
    share: float = recorded_when_set(0.0)


def test_a_key_recorded_when_set_is_left_out_at_its_default():
    assert to_dict(Extended(3)) == {"size": 3}  # what a file written before `share` existed holds
    assert from_dict(Extended, {"size": 3}) == Extended(3)
    assert to_dict(Extended(3, 0.5)) == {"size": 3, "share": 0.5}
    assert from_dict(Extended, to_dict(Extended(3, 0.5))) == Extended(3, 0.5)
