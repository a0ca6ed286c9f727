"""The rebalancer's arithmetic (connections/rebalance.py); the real thing is tests/e2e."""

from __future__ import annotations

from connections.rebalance import rebalance_surplus


def test_nothing_within_the_threshold_or_alone() -> None:
    assert rebalance_surplus({"a": 12, "b": 10, "c": 8}, "a", 0.25) == 0
    assert rebalance_surplus({"a": 30}, "a", 0.25) == 0
    assert rebalance_surplus({"a": 1, "b": 0}, "a", 0.25) == 0  # ceil(0.5 * 1.25) = 1


def test_above_the_threshold_hands_back_down_to_the_mean() -> None:
    # 15, 15, 0 after a restart: the mean is 10, each full instance hands back 5.
    assert rebalance_surplus({"a": 15, "b": 15, "c": 0}, "a", 0.25) == 5
    assert rebalance_surplus({"a": 15, "b": 15, "c": 0}, "c", 0.25) == 0
    assert rebalance_surplus({"a": 100, "b": 0}, "a", 0) == 50


def test_an_unknown_instance_does_nothing() -> None:
    assert rebalance_surplus({"a": 10, "b": 0}, "z", 0.25) == 0


def test_a_small_surplus_is_left_alone() -> None:
    assert rebalance_surplus({"a": 15, "b": 15, "c": 0}, "a", 0.25, minimum=10) == 0
    assert rebalance_surplus({"a": 150, "b": 150, "c": 0}, "a", 0.25, minimum=10) == 50
