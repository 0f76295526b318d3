"""The TriMul operator: seeded inputs and the plain-PyTorch reference.

Outgoing Triangle Multiplicative Update (AlphaFold 3), hidden width H = 128:

    xn        = LayerNorm_C(x)                                   (weight, bias; eps 1e-5)
    left      = (xn @ Wl^T) * mask * sigmoid(xn @ Wlg^T)         [B, N, N, H]
    right     = (xn @ Wr^T) * mask * sigmoid(xn @ Wrg^T)         [B, N, N, H]
    t[b,i,j,h] = sum_k left[b,i,k,h] * right[b,j,k,h]
    out       = (LayerNorm_H(t) * sigmoid(xn @ Wog^T)) @ Wo^T    [B, N, N, C]

x is float32 [B, N, N, C], mask float32 [B, N, N] of 0/1; the output is float32 [B, N, N, C].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HIDDEN = 128
EPS = 1e-5
DISTRIBUTIONS = ("normal", "cauchy")

# The keys of inputs["weights"]; a Linear weight is [out_features, in_features], none has a bias.
WEIGHT_NAMES = ("norm.weight", "norm.bias",
                "left_proj.weight", "right_proj.weight", "left_gate.weight", "right_gate.weight",
                "out_gate.weight", "to_out_norm.weight", "to_out_norm.bias", "to_out.weight")


def make_inputs(B: int, N: int, C: int, distribution: str = "normal", masked: bool = False,
                seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Deterministic inputs for one case: the same (shape, seed, device) always gives the same tensors.

    Returns {"x": [B,N,N,C], "mask": [B,N,N], "weights": {name: tensor}}, all float32 on `device`.
    Random numbers are drawn on `device` itself (fast for the large shapes), so a CPU and a CUDA
    draw from the same seed differ; the harness always builds reference and solution inputs on
    the same device.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    device = torch.device(device)
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    f32 = dict(device=device, dtype=torch.float32)

    def randn(*size):
        return torch.randn(*size, generator=g, **f32)

    if distribution == "normal":
        x = randn(B, N, N, C)
    else:  # heavy tails: Cauchy(0, 2) has no mean or variance, so LayerNorm sees wild outliers
        x = torch.empty(B, N, N, C, **f32).cauchy_(median=0.0, sigma=2.0, generator=g)
    if masked:
        mask = torch.randint(0, 2, (B, N, N), generator=g, device=device).to(torch.float32)
    else:
        mask = torch.ones(B, N, N, **f32)

    def linear(out_f, in_f):  # like nn.Linear's scale: entries ~ 1/sqrt(fan_in)
        return randn(out_f, in_f) / math.sqrt(in_f)

    H = HIDDEN
    weights = {
        "norm.weight": 1.0 + 0.1 * randn(C),
        "norm.bias": 0.1 * randn(C),
        "left_proj.weight": linear(H, C),
        "right_proj.weight": linear(H, C),
        "left_gate.weight": linear(H, C),
        "right_gate.weight": linear(H, C),
        "out_gate.weight": linear(H, C),
        "to_out_norm.weight": 1.0 + 0.1 * randn(H),
        "to_out_norm.bias": 0.1 * randn(H),
        "to_out.weight": linear(C, H),
    }
    return {"x": x, "mask": mask, "weights": weights}


def gated_projections(inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, right, out_gate), each [B, N, N, H]: everything before the triangular contraction."""
    x, mask, w = inputs["x"], inputs["mask"], inputs["weights"]
    C = x.shape[-1]
    xn = F.layer_norm(x, (C,), w["norm.weight"], w["norm.bias"], eps=EPS)
    m = mask.unsqueeze(-1)
    left = F.linear(xn, w["left_proj.weight"]) * m * torch.sigmoid(F.linear(xn, w["left_gate.weight"]))
    right = F.linear(xn, w["right_proj.weight"]) * m * torch.sigmoid(F.linear(xn, w["right_gate.weight"]))
    return left, right, torch.sigmoid(F.linear(xn, w["out_gate.weight"]))


def project_out(t: torch.Tensor, out_gate: torch.Tensor, weights: dict) -> torch.Tensor:
    """Everything after the contraction: LayerNorm over H, the output gate, the projection to C."""
    t = F.layer_norm(t, (HIDDEN,), weights["to_out_norm.weight"], weights["to_out_norm.bias"], eps=EPS)
    return F.linear(t * out_gate, weights["to_out.weight"])


def reference_kernel(inputs: dict) -> torch.Tensor:
    """The operator in plain PyTorch, float32 throughout."""
    left, right, out_gate = gated_projections(inputs)
    t = torch.einsum("bikh,bjkh->bijh", left, right)
    return project_out(t, out_gate, inputs["weights"])
