"""Reference denoisers: `denoise(train_counts) -> denoised` on a dense (cells, genes) array.

- `no_denoise`: the training counts (OpenProblems' "No denoising" control, scores 0).
- `perfect`: the held-out test counts (OpenProblems' "Perfect denoising" control, scores 1);
  it needs the test half, so its signature is `perfect(train, test)`.
- `magic`: a MAGIC-style diffusion (van Dijk et al. 2018) written in numpy, mirroring
  OpenProblems' MAGIC call (library-size normalise to 1, sqrt, MAGIC exact with knn=5, decay=1,
  t=3, square, multiply by the library size) with these deviations: the graph is built on the
  top `n_graph_genes` genes by count and `n_pca` principal components (MAGIC: all genes, 100
  PCs), the kernel is graphtools' kNN kernel rewritten densely, and each output cell is finally
  rescaled to its training library size so the result is on the count scale (MAGIC's squared
  averages shrink totals; the MSE is blind to this, the Poisson loss is not).
- `knn_smooth`: average each cell's library-normalised profile with its k nearest neighbours
  in PCA space and rescale to the cell's library size (a one-step simplification of Wagner et
  al.'s iterative kNN-smoothing, which OpenProblems runs with k=10 and which sums raw counts).

- `sharpen`: NOT a denoiser but a probe of the metric: each cell's own counts raised to the power
  1.5 and rescaled to its library size. It uses no other cell, yet scores mse_norm 0.31 on the
  celltypist sample (MAGIC-style: 0.15), because the log-space MSE against a sparse held-out
  half rewards shrinking low counts towards zero. A loop optimising mse_norm can climb this way.
- `shrink`: NOT a denoiser but a probe of the OpenProblems Poisson loss: the training counts times
  1e-3. The MSE is unchanged (0.0) while poisson_norm jumps to ~0.98; the cell-rescaled Poisson
  (metrics.py) stays at 0.0.

All are CPU-fast on a few thousand cells: the graph work is on at most `n_graph_genes` genes,
only the final diffusion/averaging touches every gene."""

from __future__ import annotations

import numpy as np


def no_denoise(train: np.ndarray) -> np.ndarray:
    return np.array(train, dtype=np.float32, copy=True)


def perfect(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    if test.shape != train.shape:
        raise ValueError(f"test shape {test.shape} differs from train shape {train.shape}")
    return np.array(test, dtype=np.float32, copy=True)


def library_fractions(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell divided by its total (scprep `library_size_normalize(rescale=1)`); all-zero
    cells stay zero. Returns (fractions float32, library sizes float64)."""
    lib = np.asarray(X, dtype=np.float64).sum(axis=1)
    inv = np.divide(1.0, lib, out=np.zeros_like(lib), where=lib > 0)
    return (X * inv[:, None]).astype(np.float32), lib


def pca(X: np.ndarray, n_components: int, n_top_genes: int) -> np.ndarray:
    """Cell coordinates on the first principal components of the `n_top_genes` columns of X with
    the largest sums (column-centred, exact SVD)."""
    top = np.argsort(-X.sum(axis=0), kind="stable")[: min(n_top_genes, X.shape[1])]
    Z = np.asarray(X[:, top], dtype=np.float64)
    Z = Z - Z.mean(axis=0)
    U, S, _ = np.linalg.svd(Z, full_matrices=False)
    k = min(n_components, len(S))
    return U[:, :k] * S[:k]


def pairwise_distances(E: np.ndarray) -> np.ndarray:
    sq = (E**2).sum(axis=1)
    D2 = sq[:, None] + sq[None, :] - 2.0 * E @ E.T
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return np.sqrt(D2)


def markov_matrix(E: np.ndarray, knn: int = 5, decay: float = 1.0, thresh: float = 1e-4) -> np.ndarray:
    """graphtools-style adaptive kernel: bandwidth_i = distance to cell i's knn-th neighbour,
    K_ij = exp(-(d_ij / bandwidth_i) ** decay), entries below `thresh` set to 0, symmetrised
    as (K + K^T) / 2, then row-normalised into a Markov (diffusion) operator."""
    D = pairwise_distances(E)
    n = D.shape[0]
    k = min(knn, n - 1)
    bandwidth = np.sort(D, axis=1)[:, k]  # column 0 is the cell itself
    bandwidth = np.where(bandwidth > 0, bandwidth, np.finfo(np.float64).tiny)
    K = np.exp(-((D / bandwidth[:, None]) ** decay))
    K[K < thresh] = 0.0
    K = (K + K.T) / 2.0
    return K / K.sum(axis=1, keepdims=True)


def rescale_to_library(Y: np.ndarray, lib: np.ndarray) -> np.ndarray:
    """Scale each cell of Y to the total `lib`; cells with no output mass or no library stay 0."""
    tot = np.asarray(Y, dtype=np.float64).sum(axis=1)
    f = np.divide(lib, tot, out=np.zeros_like(tot), where=tot > 0)
    return (Y * f[:, None].astype(Y.dtype)).astype(np.float32)


def magic(
    train: np.ndarray,
    *,
    knn: int = 5,
    decay: float = 1.0,
    t: int = 3,
    n_pca: int = 50,
    n_graph_genes: int = 3000,
) -> np.ndarray:
    """MAGIC-style diffusion denoiser (sqrt normalisation); see the module docstring."""
    frac, lib = library_fractions(train)
    Xs = np.sqrt(frac)
    E = pca(Xs, n_pca, n_graph_genes)
    P = markov_matrix(E, knn=knn, decay=decay).astype(np.float32)
    Pt = np.linalg.matrix_power(P, t) if t > 0 else np.eye(len(P), dtype=np.float32)
    Y = np.square(Pt @ Xs) * lib[:, None].astype(np.float32)
    return rescale_to_library(Y, lib)


def knn_smooth(train: np.ndarray, *, k: int = 10, n_pca: int = 50, n_graph_genes: int = 3000) -> np.ndarray:
    """Mean of the library-normalised profiles of each cell and its k nearest neighbours
    (Euclidean, on PCs of sqrt library fractions), rescaled to the cell's library size."""
    frac, lib = library_fractions(train)
    E = pca(np.sqrt(frac), n_pca, n_graph_genes)
    D = pairwise_distances(E)
    k = min(k, len(D) - 1)
    neighbours = np.argsort(D, axis=1, kind="stable")[:, : k + 1]  # includes the cell itself
    W = np.zeros_like(D, dtype=np.float32)
    np.put_along_axis(W, neighbours, 1.0, axis=1)
    np.fill_diagonal(W, 1.0)  # the cell itself, even when tied distances push it out
    W /= W.sum(axis=1, keepdims=True)
    return rescale_to_library(W @ frac, lib)


def sharpen(train: np.ndarray, *, power: float = 1.5) -> np.ndarray:
    """Metric probe (see module doc): train ** power, each cell rescaled to its library size."""
    _, lib = library_fractions(train)
    return rescale_to_library(np.power(np.asarray(train, dtype=np.float32), power), lib)


def shrink(train: np.ndarray, *, factor: float = 1e-3) -> np.ndarray:
    """Metric probe (see module doc): the training counts scaled by `factor`."""
    return (np.asarray(train, dtype=np.float32) * factor).astype(np.float32)


SOLUTIONS = {"no_denoise": no_denoise, "magic": magic, "knn": knn_smooth, "sharpen": sharpen, "shrink": shrink}
