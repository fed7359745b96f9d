"""The statistics of the benchmark on fixed data: stats.py (IQM, bootstrap intervals, the comparison rule,
normalization) and the linear read-out of gru_probe.py."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmark"))
import stats  # noqa: E402


def test_the_iqm_is_the_mean_of_the_middle_half():
    # Eight scores: the lowest two and the highest two are cut, the mean of 3, 4, 5, 6 is left.
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # One collapsed seed moves the mean far more than the IQM.
    scores = [500.0] * 7 + [9.0]
    assert stats.iqm(scores) == pytest.approx(500.0)
    assert np.mean(scores) == pytest.approx(438.625)


def test_the_interval_holds_the_point_and_shrinks_with_more_seeds():
    # The same spread of scores seen over 5, 20 and 80 seeds: more seeds, a narrower interval.
    widths = []
    for copies in [1, 4, 16]:
        scores = np.tile([60.0, 90.0, 100.0, 110.0, 140.0], copies)
        result = stats.intervals(scores)
        for point, low, high in result.values():
            assert low <= point <= high
        assert result["mean"][0] == pytest.approx(scores.mean())
        widths.append(result["iqm"][2] - result["iqm"][1])
    assert widths[0] > widths[1] > widths[2]


def test_intervals_are_reproducible_and_leave_numpy_s_generator_alone():
    scores = [-204.1, -187.5, -107.5, -224.9, -167.8, -168.4, -230.1, -135.9]
    stats.bootstrap_intervals.cache_clear()
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    first = stats.intervals(scores)
    stats.bootstrap_intervals.cache_clear()  # resample again instead of reading the cached result
    assert stats.intervals(scores) == first, "the same scores give the same interval"
    assert np.random.random() == expected_next


def test_a_suite_interval_pools_its_envs():
    # Two envs, four seeds: the IQM pools all eight normalized scores.
    matrix = np.array([[0.1, 1.0], [0.2, 1.1], [0.3, 1.2], [0.4, 1.3]])
    point, low, high = stats.intervals(matrix)["iqm"]
    assert point == pytest.approx(stats.iqm(matrix.ravel()))
    assert low < point < high


def test_an_anchor_is_ahead_only_below_the_whole_interval():
    assert stats.compare(10.0, 20.0, 9.0) == "ahead"
    assert stats.compare(10.0, 20.0, 10.0) == "level"
    assert stats.compare(10.0, 20.0, 15.0) == "level"
    assert stats.compare(10.0, 20.0, 21.0) == "behind"


def test_normalized_scores_put_random_at_zero_and_the_reference_at_one():
    assert stats.normalized([-1200.0, -150.0, -675.0], -1200.0, -150.0).tolist() == [0.0, 1.0, 0.5]
    assert stats.normalized([20.0, 500.0], 20.0, 500.0).tolist() == [0.0, 1.0]


def test_figures_are_rounded_to_their_scale():
    assert stats.format_interval(2793.3, 2242.1, 3203.9) == "2793 [2242, 3204]"
    assert stats.format_interval(85.66, 35.2, 129.4) == "85.7 [35.2, 129.4]"
    assert stats.format_interval(0.934, 0.83, 0.961) == "0.93 [0.83, 0.96]"


def test_the_gru_probe_reads_out_a_linear_signal_and_not_noise():
    import gru_probe

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(400, 6))
    signal = inputs @ rng.normal(size=(6, 2)) + 0.5
    noise = rng.normal(size=(400, 2))
    scores = gru_probe.ridge_r2(inputs[:300], signal[:300], inputs[300:], signal[300:])
    assert np.all(scores > 0.999)
    scores = gru_probe.ridge_r2(inputs[:300], noise[:300], inputs[300:], noise[300:])
    assert np.all(scores < 0.05)
