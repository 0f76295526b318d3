"""OpenProblems' denoising metrics, their anti-gaming checks and their normalisation.

Sources read (via code search; OpenProblems itself was not run here):
- v2 `openproblems-bio/task_denoising` src/metrics/mse/script.py, src/metrics/poisson/script.py,
  src/data_processors/process_dataset/script.py, src/control_methods/perfect_denoising;
- v1 `openproblems-bio/openproblems` openproblems/tasks/denoising/metrics/{mse,poisson}.py and
  methods/baseline.py;
- TTT-Discover's denoising evaluator (`evaluate_mse`, `evaluate_poisson`, `run_denoising_eval`),
  which produced the published pancreas/PBMC numbers quoted in README.md.

MSE (identical in v1-latest, v2 and TTT-Discover):
    scanpy `normalize_total(target_sum=10_000)` of each cell of the test counts and of the
    denoised matrix separately (a cell whose total is 0 stays all-zero, as in scanpy), then
    `log1p`, then `sklearn.metrics.mean_squared_error` = mean over all (cell, gene) entries.
    There is NO test/train rescaling in the MSE: the per-cell normalisation makes each cell's
    scale irrelevant. (The earliest v1 used the median test cell total as target_sum; later
    versions and TTT-Discover use 10,000, which we follow.)

Poisson (v1 and TTT-Discover argument order):
    c = test.sum() / train.sum()          # whole-matrix totals, not per cell
    poisson = mean(test - (c * denoised) * log(test + 1e-6))
  i.e. `molecular_cross_validation.mcv_sweep.poisson_nll_loss(y_pred=test, y_true=c*denoised)`
  where poisson_nll_loss(y_pred, y_true) = mean(y_pred - y_true * log(y_pred + 1e-6)).
  This is the order OpenProblems v1 and TTT-Discover call it with (v2 later swapped to
  poisson_nll_loss(c*denoised, test), the textbook NLL of the test counts). Under this order the
  loss is LINEAR in the denoised values: every unit of (scaled) mass on an entry whose test count
  is 0 costs 13.8, and mass on entries with test >= 2 earns log(test). Consequences, documented
  in README.md: it is not minimised by the perfect reference, scaling a whole output down moves
  it towards mean(test) (just above perfect) without changing the MSE, and scaling an output
  with its mass on high-count entries up can beat "perfect"; hence the better-than-perfect check.

Poisson, cell-rescaled (our addition, not OpenProblems): the same loss after scaling each denoised
cell to its training library size, `poisson(train_total, test, rescale_cells(denoised, train))`.
Like the MSE it only sees each cell's profile, so shrinking an output (which moves the
OpenProblems Poisson towards "perfect" for free: train * 1e-3 scores poisson_norm 0.98 and
mse_norm 0.0 on the celltypist sample) gains nothing. Its references are the same control
outputs: no_denoise = train (unchanged by the rescaling), perfect = test rescaled per cell to the
training library sizes. For any output already on the count scale (each cell summing to its
training total) it equals the OpenProblems Poisson.

References and normalisation (OpenProblems control methods):
    no_denoise = the training counts themselves;  perfect = the test counts themselves (the
    metric's c * denoised then puts them on the test scale). For MSE, perfect is exactly 0.
    norm = (no_denoise - m) / (no_denoise - perfect): no denoising scores 0, perfect scores 1,
    higher is better, for both metrics."""

from __future__ import annotations

import numpy as np

TARGET_SUM = 10_000.0
POISSON_EPS = 1e-6


def log_normalize(X: np.ndarray, target_sum: float = TARGET_SUM) -> np.ndarray:
    """scanpy `normalize_total(target_sum)` then `log1p`, in float64; all-zero cells stay zero."""
    X = np.asarray(X, dtype=np.float64)
    totals = X.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(X * scale)


def mse(test: np.ndarray, denoised: np.ndarray, test_log: np.ndarray | None = None) -> float:
    """OpenProblems' MSE between log-normalised test counts and log-normalised denoised values.
    `test_log` may pass a precomputed `log_normalize(test)`."""
    a = log_normalize(test) if test_log is None else test_log
    b = log_normalize(denoised)
    return float(np.mean((a - b) ** 2))


def poisson(train_total: float, test: np.ndarray, denoised: np.ndarray) -> float:
    """OpenProblems v1 / TTT-Discover Poisson loss (argument order as they call it; see module doc)."""
    return float(poisson_per_cell(train_total, test, denoised).mean())


def poisson_per_cell(train_total: float, test: np.ndarray, denoised: np.ndarray) -> np.ndarray:
    """`poisson`'s loss per cell (the mean over its genes); their mean is `poisson`."""
    test = np.asarray(test, dtype=np.float64)
    scaled = np.asarray(denoised, dtype=np.float64) * (test.sum() / train_total)
    return np.mean(test - scaled * np.log(test + POISSON_EPS), axis=1)


def rescale_cells(denoised: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Each denoised cell scaled to the cell's total training count; all-zero cells stay zero."""
    D = np.asarray(denoised, dtype=np.float64)
    lib = np.asarray(train, dtype=np.float64).sum(axis=1)
    tot = D.sum(axis=1)
    return D * np.divide(lib, tot, out=np.zeros_like(tot), where=tot > 0)[:, None]


def poisson_rescaled(train: np.ndarray, test: np.ndarray, denoised: np.ndarray) -> float:
    """The OpenProblems Poisson loss of the cell-rescaled output (see module doc)."""
    train = np.asarray(train, dtype=np.float64)
    return poisson(float(train.sum()), test, rescale_cells(denoised, train))


def check_denoised(denoised, train: np.ndarray) -> np.ndarray:
    """Reject outputs that cannot be scored honestly; return them as float64.

    - not a 2-D numeric array of the training shape (cells, kept genes);
    - any NaN or +-inf;
    - any negative value (counts and rates are non-negative; the Poisson loss would reward it);
    - any value above the total training count of the whole matrix (TTT-Discover's bound: no
      single gene in a single cell can be expected to hold more molecules than the whole
      dataset; it keeps the linear Poisson loss and float sums finite and meaningful). A bound
      per cell was rejected: denoisers legitimately return rescaled values (e.g. CP10k, or kNN
      sums of k+1 cells) and the MSE ignores each cell's scale."""
    try:
        D = np.asarray(denoised, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"denoised output is not a numeric array: {exc}") from None
    if D.shape != train.shape:
        raise ValueError(f"denoised output has shape {D.shape}, expected {train.shape} (cells, genes) "
                         "like the training counts")
    if not np.isfinite(D).all():
        raise ValueError(f"denoised output holds {int((~np.isfinite(D)).sum())} NaN or infinite values")
    if (D < 0).any():
        raise ValueError(f"denoised output holds {int((D < 0).sum())} negative values "
                         f"(min {D.min():.4g}); expression must be non-negative")
    bound = float(np.asarray(train, dtype=np.float64).sum())
    if D.max() > bound:
        raise ValueError(f"denoised output holds a value {D.max():.4g} above the total training count "
                         f"{bound:.4g} of the whole matrix")
    return D


def normalized(value: float, no_denoise: float, perfect: float) -> float:
    """(no_denoise - value) / (no_denoise - perfect): 0 for no denoising, 1 for perfect."""
    span = no_denoise - perfect
    if not span > 0:
        raise ValueError(f"degenerate references: no-denoise {no_denoise} is not worse than perfect {perfect}")
    return (no_denoise - value) / span


def own_count_r2(train: np.ndarray, denoised: np.ndarray) -> np.ndarray:
    """Per cell: the share of the variance of the log-normalised output explained by each entry's
    own training count (R² of the output against the cell's count values as groups). 1.0 means the
    output is a function of each entry's own count within the cell: a transform of the input
    (`sharpen`, `shrink`, no denoising), not a denoiser, which borrows from other cells and gives
    entries with the same count different values. A cell whose output is constant scores 1.0."""
    X = np.asarray(train)
    Y = log_normalize(denoised)
    cells = np.repeat(np.arange(X.shape[0]), X.shape[1])
    counts = np.rint(X.ravel()).astype(np.int64)
    _, group = np.unique(cells * (int(counts.max(initial=0)) + 1) + counts, return_inverse=True)
    y = Y.ravel()
    n = np.bincount(group)
    group_mean = np.bincount(group, weights=y) / n
    within = np.bincount(cells, weights=(y - group_mean[group]) ** 2)
    total = ((Y - Y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return np.where(total > 0, 1.0 - np.divide(within, total, out=np.zeros_like(total), where=total > 0), 1.0)
