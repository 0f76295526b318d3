"""TriMul with the triangular contraction in a hand-written Triton kernel; the rest is the reference's PyTorch.

    t[b,i,j,h] = sum_k left[b,i,k,h] * right[b,j,k,h]

is, for each (b, h), the matrix product L @ R^T of two N x N matrices (rows i resp. j, columns k).
The wrapper lays left and right out as [B*H, N, N] (k contiguous), and the kernel computes one
BLOCK_M x BLOCK_N tile of one (b, h) product per program, accumulating in float32.

On a CUDA device tl.dot uses TF32 tensor cores (well inside the 0.02 tolerance). Without CUDA it runs
under Triton's interpreter, which needs TRITON_INTERPRET=1 in the environment *before* this module is
imported (triton.jit picks compiled or interpreted at decoration time) and CPU tensors.
"""

import torch
import triton
import triton.language as tl

from sia.tasks.trimul.reference import gated_projections, project_out


@triton.jit
def _bmm_nt_kernel(a_ptr, b_ptr, c_ptr, N, K,
                   s_az, s_am, s_ak, s_bz, s_bn, s_bk, s_cz, s_cm, s_cn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """c[z, m, n] = sum_k a[z, m, k] * b[z, n, k] for an N x N output per z."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    z = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + z * s_az + rm[:, None] * s_am + rk[None, :] * s_ak  # [BLOCK_M, BLOCK_K]
    b_ptrs = b_ptr + z * s_bz + rk[:, None] * s_bk + rn[None, :] * s_bn  # [BLOCK_K, BLOCK_N], b^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=(rm[:, None] < N) & (rk[None, :] + k0 < K), other=0.0)
        b = tl.load(b_ptrs, mask=(rk[:, None] + k0 < K) & (rn[None, :] < N), other=0.0)
        acc += tl.dot(a, b)
        a_ptrs += BLOCK_K * s_ak
        b_ptrs += BLOCK_K * s_bk
    c_ptrs = c_ptr + z * s_cz + rm[:, None] * s_cm + rn[None, :] * s_cn
    tl.store(c_ptrs, acc, mask=(rm[:, None] < N) & (rn[None, :] < N))


INTERPRETED = type(_bmm_nt_kernel).__name__ == "InterpretedFunction"


def triangle_contract(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """[B, N, N, H] x [B, N, N, H] -> [B, N, N, H]: out[b,i,j,h] = sum_k left[b,i,k,h] right[b,j,k,h]."""
    if left.is_cuda == INTERPRETED:
        raise RuntimeError("triton_matmul needs CUDA tensors with compiled Triton, or CPU tensors with "
                           "TRITON_INTERPRET=1 set before import (got "
                           f"{left.device} tensors, interpreter {'on' if INTERPRETED else 'off'})")
    B, N, _, H = left.shape
    a = left.permute(0, 3, 1, 2).reshape(B * H, N, N).contiguous()   # [z, i, k]
    b = right.permute(0, 3, 1, 2).reshape(B * H, N, N).contiguous()  # [z, j, k]
    c = torch.empty(B * H, N, N, device=left.device, dtype=torch.float32)
    if left.is_cuda:
        bm, bn, bk, warps = 64, 64, 32, 4
    else:  # the interpreter runs each program in NumPy: few, large-enough blocks keep it quick
        bm, bn, bk, warps = 32, 32, 32, 1
    grid = (triton.cdiv(N, bm), triton.cdiv(N, bn), B * H)
    _bmm_nt_kernel[grid](a, b, c, N, N,
                         a.stride(0), a.stride(1), a.stride(2),
                         b.stride(0), b.stride(1), b.stride(2),
                         c.stride(0), c.stride(1), c.stride(2),
                         BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)
    return c.view(B, H, N, N).permute(0, 2, 3, 1)


def custom_kernel(inputs):
    left, right, out_gate = gated_projections(inputs)
    return project_out(triangle_contract(left, right), out_gate, inputs["weights"])
