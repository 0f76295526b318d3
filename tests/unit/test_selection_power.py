"""examples/selection_power.py: keep-best's acceptance rate on simulated selection splits."""

from __future__ import annotations


import pytest

from sia.config import KeepBestConfig
from tests.examples import load_example


@pytest.fixture(scope="module")
def power():
    return load_example("selection_power").acceptance_rate


CFG = KeepBestConfig(resamples=1000)


def test_no_gain_is_accepted_about_one_minus_confidence_of_the_time(power):
    rate = power(72, 0.1, 0.1, CFG, trials=400)
    assert 0.1 <= rate <= 0.3  # nominal 0.2; the bootstrap is not exact on 72 items


def test_power_grows_with_the_gain_and_with_the_selection_size(power):
    small, large = power(36, 0.10, 0.05, CFG, trials=300), power(288, 0.10, 0.05, CFG, trials=300)
    assert small < large
    assert power(72, 0.30, 0.0, CFG, trials=100) == 1.0
    assert power(72, 0.0, 0.10, CFG, trials=100) == 0.0


def test_shares_that_do_not_add_up_are_an_error(power):
    with pytest.raises(ValueError, match="must be shares"):
        power(72, 0.7, 0.4, CFG, trials=10)
