"""When a budget stops DASR so that its SRResNet baseline can still reach the same iteration."""

from __future__ import annotations

import pytest

from dasrlib.campaign.run import DEFAULT_SRRESNET_RATE, STARTUP_S, baseline_catch_up_s


def test_the_catch_up_follows_a_slower_machine_and_never_a_faster_one() -> None:
    # Rates measured where DASR ran 1.39 it/s and the baseline 2.01; here DASR runs 0.70.
    slower = baseline_catch_up_s(3985, baseline_rate=2.01, dasr_rate_then=1.39, dasr_rate_now=0.7)
    assert slower == pytest.approx(3985 / (2.01 * 0.7 / 1.39) + STARTUP_S)
    assert slower > 3985 / 1.2  # the baseline's rate measured on such a machine: 1.2 it/s
    faster = baseline_catch_up_s(100, baseline_rate=1.0, dasr_rate_then=0.7, dasr_rate_now=1.4)
    assert faster == pytest.approx(100 / 1.0 + STARTUP_S)


def test_before_any_measured_rate_the_default_is_used() -> None:
    first = baseline_catch_up_s(100, baseline_rate=None, dasr_rate_then=None, dasr_rate_now=None)
    assert first == pytest.approx(100 / DEFAULT_SRRESNET_RATE + STARTUP_S)
    unmeasured = baseline_catch_up_s(100, baseline_rate=1.5, dasr_rate_then=1.4, dasr_rate_now=None)
    assert unmeasured == pytest.approx(100 / 1.5 + STARTUP_S)
