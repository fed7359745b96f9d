"""The statistics behind the benchmark tables (docs/protocol.md explains them for a reader).

A row of a table is several seeds of one (script, env, budget, flags). Its figure is the interquartile
mean (IQM: the mean of the middle 50% of the seeds' scores, robust to one lucky or collapsed seed) with
a 95% confidence interval from a stratified bootstrap over the seeds, and the mean with its interval,
as Agarwal et al. (2021, "Deep RL at the Edge of the Statistical Precipice") recommend; their library
`rliable` computes both. A suite's aggregate normalizes each env's scores between a random policy (0)
and a stated reference (1), so envs with returns of different scales can be pooled.

A published anchor is compared by where our interval lies: "ahead" only when the whole interval is above
the anchor's mean, "behind" when it is below, "level" when it covers it.
"""

import contextlib
import functools

import numpy as np

# Bootstrap resamples per interval: 2000 is what percentile intervals need (Efron and Tibshirani suggest
# 1000-2000; rliable uses 2000 for its profiles), and keeps the tables (and the test that checks the docs
# against them) quick to rebuild. A fixed generator makes every interval reproducible from the stored scores.
REPS = 2000
CONFIDENCE = 0.95


def iqm(scores) -> float:
    """Interquartile mean: the mean of the scores left after cutting the lowest and highest 25%."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def intervals(scores, reps: int | None = None) -> dict[str, tuple[float, float, float]]:
    """{"iqm": (point, low, high), "mean": (point, low, high)} of scores, an array (runs,) for one env or
    (runs, envs) for a suite; with several envs the bootstrap resamples runs within each env (stratified)."""
    matrix = np.asarray(scores, dtype=float)
    matrix = matrix[:, None] if matrix.ndim == 1 else matrix
    return bootstrap_intervals(tuple(map(tuple, matrix)), reps or REPS)


@functools.cache  # a row appears in several tables (and in the headlines): its bootstrap runs once
def bootstrap_intervals(rows: tuple[tuple[float, ...], ...], reps: int) -> dict[str, tuple[float, float, float]]:
    from rliable import library, metrics

    def statistics(sample: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(sample), metrics.aggregate_mean(sample)])

    with seeded_global_generator():
        points, bounds = library.get_interval_estimates(
            {"run": np.array(rows)}, statistics, reps=reps, confidence_interval_size=CONFIDENCE
        )
    (iqm_point, mean_point), ((iqm_low, mean_low), (iqm_high, mean_high)) = points["run"], bounds["run"]
    return {"iqm": (iqm_point, iqm_low, iqm_high), "mean": (mean_point, mean_low, mean_high)}


@contextlib.contextmanager
def seeded_global_generator():
    """rliable's bootstraps draw their resamples from numpy's global generator (its random_state argument
    does not reach them): seed it for reproducible intervals, and give it back its state afterwards."""
    global_state = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(global_state)


def compare(low: float, high: float, anchor_mean: float) -> str:
    """Where an interval [low, high] lies against a published mean."""
    if low > anchor_mean:
        return "ahead"
    if high < anchor_mean:
        return "behind"
    return "level"


def normalized(scores, random_score: float, reference: float) -> np.ndarray:
    """0 for a random policy, 1 for the reference (e.g. a published figure); works for negative returns too."""
    return (np.asarray(scores, dtype=float) - random_score) / (reference - random_score)


def format_interval(point: float, low: float, high: float) -> str:
    """ "point [low, high]", with no decimals on returns in the hundreds, one below, two below 10."""
    return f"{format_value(point)} [{format_value(low, point)}, {format_value(high, point)}]"


def format_value(value: float, scale: float | None = None) -> str:
    """value with the decimals its scale (by default its own size) calls for."""
    size = abs(value if scale is None else scale)
    return f"{value:.{0 if size >= 100 else 1 if size >= 10 else 2}f}"


def plot_performance_profile(curves: dict[str, np.ndarray], title: str, path) -> None:
    """Fraction of runs whose normalized score exceeds tau, for each name's (runs, envs) score matrix,
    with 95% bootstrap bands: a whole distribution instead of one aggregate figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library, plot_utils

    top = max(1.5, max(float(np.nanmax(matrix)) for matrix in curves.values()))
    taus = np.linspace(min(0.0, min(float(np.nanmin(matrix)) for matrix in curves.values())), top, 61)
    with seeded_global_generator():
        profiles, bands = library.create_performance_profile(curves, taus, reps=REPS)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=bands, ax=ax, figsize=(6, 4))
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")  # one line per suite, labelled by rliable
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
