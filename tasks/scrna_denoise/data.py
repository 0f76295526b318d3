"""Count matrices for the denoising task: the raw-count sample inside the `celltypist` wheel,
a seeded Splatter-style simulator, and a loader for a user's raw counts (CSV, or AnnData `.h5ad`
read with h5py, the optional `h5ad` extra).

Every function returns a dense (cells, genes) array of non-negative integer counts."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CELLTYPIST_REQUIREMENT = "celltypist==1.7.1"
CELLTYPIST_SAMPLE = "celltypist/data/samples/sample_cell_by_gene.csv"
CELLTYPIST_SHAPE = (559, 32786)
# The sample stores counts as CSV floats such as 0.999999999999999 and 3.00000000000001.
INTEGER_TOLERANCE = 1e-6


@dataclass
class Counts:
    """A raw-count matrix with its row and column names."""

    X: np.ndarray  # (cells, genes) float32 holding non-negative integers
    genes: list[str]
    cells: list[str]


def load_celltypist_sample(cache_dir: Path | None = None) -> Counts:
    """The 559-cell x 32,786-gene raw-count sample shipped in the PyPI wheel of `celltypist`
    (`celltypist/data/samples/sample_cell_by_gene.csv`: header of gene names, first column
    cell ids). The wheel is fetched once with `pip download --no-deps` into `cache_dir`
    (default: SIA's cache, `~/.cache/sia/wheels`) and read straight from the zip."""
    from sia.downloads import cache_dir as sia_cache_dir
    from sia.downloads import fetch_wheel

    wheel = fetch_wheel(CELLTYPIST_REQUIREMENT, Path(cache_dir) if cache_dir else sia_cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf, zf.open(CELLTYPIST_SAMPLE) as raw:
        counts = _read_counts_csv(io.TextIOWrapper(raw, encoding="utf-8"), f"{wheel.name}:{CELLTYPIST_SAMPLE}")
    if counts.X.shape != CELLTYPIST_SHAPE:
        raise ValueError(f"{wheel.name}: expected a {CELLTYPIST_SHAPE} sample, found {counts.X.shape}")
    return counts


def load_counts(path: str | Path) -> Counts:
    """A user's raw counts as CSV: cells x genes, a header row of gene names, the first
    column cell ids; or an AnnData `.h5ad` file (see `load_h5ad`). Raises ValueError naming the
    file and the problem for non-numeric, non-finite, negative or non-integer values and for
    ragged rows."""
    path = Path(path)
    if path.suffix.lower() == ".h5ad":
        return load_h5ad(path)
    with open(path, newline="", encoding="utf-8") as f:
        return _read_counts_csv(f, str(path))


def _read_counts_csv(f, name: str) -> Counts:
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{name}: the file is empty") from None
    genes = header[1:]
    if not genes:
        raise ValueError(f"{name}: the header names no genes (expected: cell id column, then gene names)")
    cells, rows = [], []
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{name}: line {lineno} has {len(row)} fields, the header has {len(header)}")
        try:
            rows.append(np.array(row[1:], dtype=np.float64))
        except ValueError:
            bad = next(v for v in row[1:] if not _is_number(v))
            raise ValueError(f"{name}: line {lineno} (cell {row[0]!r}) holds a non-numeric value {bad!r}") from None
        cells.append(row[0])
    if not rows:
        raise ValueError(f"{name}: no cells below the header")
    X = np.stack(rows)
    _check_counts(X, name, cells, genes)
    return Counts(X=np.round(X).astype(np.float32), genes=genes, cells=cells)


def load_h5ad(path: str | Path) -> Counts:
    """Raw counts from an AnnData file: `layers/counts` if present, else `raw/X`, else `X`
    (dense, or CSR/CSC as anndata writes them), cell ids from `obs`, gene names from `var`
    (`raw/var` with `raw/X`). Needs h5py (`pip install 'sia[h5ad]'` or `pip install h5py`)."""
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: reading .h5ad needs h5py; `pip install h5py` or save the counts as CSV") from None
    name = str(path)
    try:
        with h5py.File(path, "r") as f:
            where = next((w for w in ("layers/counts", "raw/X", "X") if w in f), None)
            if where is None:
                raise ValueError(f"{name}: no count matrix (layers/counts, raw/X or X)")
            X = _h5_matrix(f[where], h5py, name)
            cells = _h5_index(f["obs"], name)
            genes = _h5_index(f["raw/var"] if where == "raw/X" and "raw/var" in f else f["var"], name)
    except (OSError, KeyError) as exc:
        raise ValueError(f"{name}: not a readable AnnData file ({exc})") from None
    if X.shape != (len(cells), len(genes)):
        raise ValueError(f"{name}: {where} is {X.shape}, but obs has {len(cells)} cells and var {len(genes)} genes")
    _check_counts(X, f"{name}:{where}", cells, genes)
    return Counts(X=np.round(X).astype(np.float32), genes=genes, cells=cells)


def _h5_attr(node, key: str, default=None):
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


def _h5_matrix(node, h5py, name: str) -> np.ndarray:
    if isinstance(node, h5py.Dataset):
        return np.asarray(node[...], dtype=np.float64)
    kind, shape = _h5_attr(node, "encoding-type", ""), tuple(int(n) for n in node.attrs["shape"])
    if kind not in ("csr_matrix", "csc_matrix"):
        raise ValueError(f"{name}: {node.name} is encoded as {kind!r}; expected a dense array, csr_matrix or csc_matrix")
    data, indices, indptr = (np.asarray(node[k][...]) for k in ("data", "indices", "indptr"))
    X = np.zeros(shape if kind == "csr_matrix" else shape[::-1], dtype=np.float64)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    np.add.at(X, (rows, indices), data)  # sums duplicate entries, as scipy does
    return X if kind == "csr_matrix" else X.T


def _h5_index(group, name: str) -> list[str]:
    key = _h5_attr(group, "_index", "_index")
    if key not in group:
        raise ValueError(f"{name}: {group.name} has no index column {key!r}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in group[key][...]]


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def _check_counts(X: np.ndarray, name: str, cells: list[str], genes: list[str]) -> None:
    def where(mask: np.ndarray) -> str:
        i, j = np.argwhere(mask)[0]
        return f"cell {cells[i]!r}, gene {genes[j]!r}: {X[i, j]!r}"

    if not np.isfinite(X).all():
        raise ValueError(f"{name}: counts must be finite; first bad value at {where(~np.isfinite(X))}")
    if (X < 0).any():
        raise ValueError(f"{name}: counts must be non-negative; first negative at {where(X < 0)}")
    off = np.abs(X - np.round(X)) > INTEGER_TOLERANCE
    if off.any():
        raise ValueError(f"{name}: counts must be integers (raw UMI counts, not normalised data); "
                         f"first non-integer at {where(off)}")


def simulate_counts(
    n_cells: int = 500,
    n_genes: int = 10_000,
    seed: int = 0,
    *,
    n_groups: int = 4,
    mean_shape: float = 0.6,
    mean_rate: float = 0.3,
    lib_loc: float = math.log(3000.0),
    lib_scale: float = 0.3,
    de_prob: float = 0.1,
    de_down_prob: float = 0.5,
    de_fac_loc: float = 0.5,
    de_fac_scale: float = 0.4,
    dispersion: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Splatter-style negative-binomial counts (Zappia et al. 2017, simplified): returns
    (counts (cells, genes) float32 of integers, group label per cell).

    - gene base means ~ Gamma(mean_shape, rate=mean_rate), then made proportions;
    - each cell belongs to one of `n_groups` equal-probability groups; in each group a gene is
      differentially expressed with probability `de_prob`, by a factor
      LogNormal(de_fac_loc, de_fac_scale) (inverted with probability `de_down_prob`);
    - cell library sizes ~ LogNormal(lib_loc, lib_scale);
    - counts ~ NB(mean = lib * proportion, dispersion) drawn as Poisson(Gamma(1/disp, disp*mean)).
    Deterministic given the seed (numpy Generator, PCG64)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(mean_shape, 1.0 / mean_rate, size=n_genes)
    groups = rng.integers(0, n_groups, size=n_cells)
    is_de = rng.random((n_groups, n_genes)) < de_prob
    factor = rng.lognormal(de_fac_loc, de_fac_scale, size=(n_groups, n_genes))
    factor = np.where(rng.random((n_groups, n_genes)) < de_down_prob, 1.0 / factor, factor)
    group_means = base * np.where(is_de, factor, 1.0)
    proportions = group_means / group_means.sum(axis=1, keepdims=True)
    library = rng.lognormal(lib_loc, lib_scale, size=n_cells)
    mu = library[:, None] * proportions[groups]
    shape = 1.0 / dispersion
    rate = rng.gamma(shape, mu * dispersion)
    counts = rng.poisson(rate)
    return counts.astype(np.float32), groups
