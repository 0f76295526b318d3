"""The correctness test every TriMul output must pass: |out - ref| <= ATOL + RTOL * |ref| elementwise,
with NaN exactly where the reference has NaN and +/-inf exactly where it has the same infinity."""

from __future__ import annotations

import torch

ATOL = 0.02
RTOL = 0.02


def compare(out, ref: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> tuple[bool, str]:
    """(True, "") when `out` matches `ref`, else (False, a one-line reason)."""
    if not isinstance(out, torch.Tensor):
        return False, f"output is a {type(out).__name__}, not a torch.Tensor"
    if tuple(out.shape) != tuple(ref.shape):
        return False, f"wrong shape: got {tuple(out.shape)}, expected {tuple(ref.shape)}"
    if out.dtype != ref.dtype:
        return False, f"wrong dtype: got {out.dtype}, expected {ref.dtype}"
    out = out.detach().to(ref.device)
    nan_o, nan_r = torch.isnan(out), torch.isnan(ref)
    nan_bad = nan_o ^ nan_r
    inf_any = (torch.isinf(out) | torch.isinf(ref)) & ~(nan_o | nan_r)
    inf_bad = inf_any & (out != ref)  # an infinity must meet the same infinity
    finite = torch.isfinite(out) & torch.isfinite(ref)
    tol_bad = finite & ((out - ref).abs() > atol + rtol * ref.abs())
    for bad, what in ((nan_bad, "NaN positions differ"), (inf_bad, "inf positions differ"),
                      (tol_bad, f"outside |out-ref| <= {atol} + {rtol}*|ref|")):
        n = int(bad.sum())
        if n:
            idx = tuple(int(i) for i in bad.nonzero()[0])
            return False, (f"{what} at {n} of {out.numel()} elements; first at {list(idx)}: "
                           f"got {out[idx].item():.6g}, expected {ref[idx].item():.6g}")
    return True, ""
