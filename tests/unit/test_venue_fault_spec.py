"""`--faults` specs: what parses, what each mistake says, and describe() giving a spec back."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.venue.faults import FaultSpec

KEYS = ", ".join(f.name for f in fields(FaultSpec))


@pytest.mark.parametrize("spec", ["", "none", "  ", " none "])
def test_empty_spec_is_no_faults(spec: str) -> None:
    assert FaultSpec.parse(spec) == FaultSpec()


def test_every_key_parses_to_its_type() -> None:
    spec = FaultSpec.parse(
        "disconnect_every=5000,duplicate_rate=0.01,reorder_window=8,latency_ms=2,token_ttl_s=30,"
        "ws_drop_every=20000,malformed_rate=0.001,seed=7"
    )
    assert spec == FaultSpec(
        disconnect_every=5000,
        duplicate_rate=0.01,
        reorder_window=8,
        latency_ms=2.0,
        token_ttl_s=30.0,
        ws_drop_every=20000,
        malformed_rate=0.001,
        seed=7,
    )
    for name in ("disconnect_every", "reorder_window", "ws_drop_every", "seed"):
        assert type(getattr(spec, name)) is int, name
    for name in ("duplicate_rate", "latency_ms", "token_ttl_s", "malformed_rate"):
        assert type(getattr(spec, name)) is float, name


def test_spaces_are_ignored_and_a_repeated_key_takes_the_last() -> None:
    assert FaultSpec.parse(" latency_ms = 2.5 , seed=3,seed=4 ") == FaultSpec(
        latency_ms=2.5, seed=4
    )


@pytest.mark.parametrize("key", ["disconnect_every", "ws_drop_every", "token_ttl_s"])
@pytest.mark.parametrize("off", ["", "none", "0"])
def test_optional_faults_are_switched_off_by_none_zero_or_nothing(key: str, off: str) -> None:
    assert getattr(FaultSpec.parse(f"{key}={off}"), key) is None


@pytest.mark.parametrize(
    ("spec", "item"),
    [
        ("bogus=1", "bogus=1"),
        ("latency_ms", "latency_ms"),
        ("seed=1,,latency_ms=2", ""),
        ("Seed=1", "Seed=1"),
        ("latency_ms=1, =2", "=2"),
    ],
    ids=["unknown-key", "no-value", "empty-item", "wrong-case", "no-key"],
)
def test_a_bad_item_is_named_with_the_keys_that_exist(spec: str, item: str) -> None:
    expected = f"bad fault {item!r}: expected key=value with key one of {KEYS}"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        FaultSpec.parse(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("seed=x", "bad value for fault seed: 'x'"),
        ("reorder_window=2.5", "bad value for fault reorder_window: '2.5'"),
        ("disconnect_every=1e3", "bad value for fault disconnect_every: '1e3'"),
        ("latency_ms=fast", "bad value for fault latency_ms: 'fast'"),
        ("duplicate_rate=", "bad value for fault duplicate_rate: ''"),
        ("latency_ms=nan", "bad value for fault latency_ms: 'nan'"),
        ("latency_ms=inf", "bad value for fault latency_ms: 'inf'"),
        ("token_ttl_s=nan", "bad value for fault token_ttl_s: 'nan'"),
        ("malformed_rate=NaN", "bad value for fault malformed_rate: 'NaN'"),
        ("duplicate_rate=1.5", "duplicate_rate must be within [0, 1], got 1.5"),
        ("malformed_rate=-0.1", "malformed_rate must be within [0, 1], got -0.1"),
        ("disconnect_every=-1", "disconnect_every must be at least 1, got -1"),
        ("ws_drop_every=-3", "ws_drop_every must be at least 1, got -3"),
        ("reorder_window=-1", "reorder_window and latency_ms must not be negative"),
        ("latency_ms=-0.5", "reorder_window and latency_ms must not be negative"),
        ("token_ttl_s=-5", "token_ttl_s must be positive"),
    ],
)
def test_a_bad_value_says_which_and_why(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FaultSpec.parse(spec)


def test_describe_lists_what_differs_from_no_faults_and_the_seed() -> None:
    assert FaultSpec().describe() == "none"
    assert FaultSpec(seed=9).describe() == "none", "a seed alone injects nothing"
    assert FaultSpec(latency_ms=2.0, token_ttl_s=30.0, seed=9).describe() == (
        "latency_ms=2.0,token_ttl_s=30.0,seed=9"
    )


specs = st.builds(
    FaultSpec,
    disconnect_every=st.none() | st.integers(1, 10**9),
    duplicate_rate=st.floats(0.0, 1.0),
    reorder_window=st.integers(0, 10**4),
    latency_ms=st.floats(0.0, 10**6),
    token_ttl_s=st.none() | st.floats(1e-3, 10**7),
    ws_drop_every=st.none() | st.integers(1, 10**9),
    malformed_rate=st.floats(0.0, 1.0),
    seed=st.integers(-(10**9), 10**9),
)


@given(specs)
def test_describe_parses_back_to_the_same_faults(spec: FaultSpec) -> None:
    again = FaultSpec.parse(spec.describe())
    if spec.describe() == "none":
        assert again == FaultSpec()
    else:
        assert again == spec
