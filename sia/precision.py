"""The dtype the target model is served and trained in: the `Precision` setting and whether
bfloat16 pays off on this machine. The gateway (serving) and the trainer (LoRA) both ask here,
so they agree. Imports no component; torch only loads when `native_bf16()` is first asked."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Literal, get_args

from sia.downloads import cache_dir
from sia.files import write_json_atomic

# Dtype settings of serving and training: bf16 where `native_bf16()` (auto), or forced.
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

BF16_MIN_SPEEDUP = 1.25  # below this, bf16's rounding is not worth it


def _matmul_seconds(dtype, rounds: int = 5) -> float:
    """Best time of one (2048 x 576) @ (576 x 1536) matmul, SmolLM2-135M's MLP shape."""
    import time

    import torch

    a, b = torch.randn(2048, 576).to(dtype), torch.randn(576, 1536).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether bfloat16 is clearly faster than float32 here: CUDA with bf16 support, or a CPU
    with AVX512-BF16 or AMX on which a timed matmul runs at least BF16_MIN_SPEEDUP times faster
    in bf16. The flags alone do not say it: without AMX, some AVX512-BF16 CPUs run bf16 matmuls
    slower than float32. The CPU answer is kept in cache_dir()/bf16_check.json per CPU and torch
    version, so the gateway and the trainer agree and later runs skip the timing."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpuinfo = _cpuinfo()
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "").split()
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    naming = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags")
    cpu = [line for line in cpuinfo.split("\n\n", 1)[0].splitlines() if line.split(":")[0].strip() in naming]
    key = f"cpu {hashlib.sha256(chr(10).join(cpu).encode()).hexdigest()[:12]} | torch {torch.__version__}"
    record = cache_dir() / "bf16_check.json"
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        fp32, bf16 = _matmul_seconds(torch.float32), _matmul_seconds(torch.bfloat16)
        known[key] = {"fp32_s": fp32, "bf16_s": bf16, "bf16_faster": fp32 / bf16 >= BF16_MIN_SPEEDUP}
        try:
            write_json_atomic(record, known)
        except OSError:  # a read-only cache only costs a new timing next time
            pass
    return bool(known[key]["bf16_faster"])


def use_bf16(precision: Precision) -> bool:
    """'bf16', 'fp32', or 'auto' (bf16 where `native_bf16()`)."""
    return precision == "bf16" or (precision == "auto" and native_bf16())
