#!/usr/bin/env bash
# Packs .gpu/ for benchmarks/gpu_check.sh (the issue-17 check on an NVIDIA GPU machine whose image
# has torch, transformers, peft and triton but not TRL, Unsloth, pydantic or bubblewrap, and which
# can fetch nothing). Run it here, on x86-64 Linux with pip and bubblewrap, right before the check:
#     bash benchmarks/gpu_pack.sh
# Then, with the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=590)
# What travels (64 MiB at most): Python 3.12 packages and SIA installed into a folder and tarred
# (Unsloth without its web studio, bitsandbytes with only its CUDA 13.0 and CPU libraries), this
# machine's bwrap with the libraries it links and libseccomp, and SmolLM2-135M's config and
# tokenizer (no weights: the check trains a randomly initialised model of that shape).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/opt .gpu/bwrap/lib .gpu/model
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64)
# The versions this repo trains with (.venv), and the packages among their needs the image lacks.
python3 -m pip download -q --no-deps "${platform[@]}" -d .gpu/wheels \
    trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 unsloth==2026.10.9 unsloth_zoo==2026.10.9 \
    bitsandbytes==0.50.2 tyro==1.0.17 cut_cross_entropy==25.1.1 msgspec==0.23.0 hf_transfer==0.1.9 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 \
    docstring_parser==0.18.0 typeguard==4.6.1 torchao==0.18.0 diffusers==0.42.1 json5==0.17.3 nest_asyncio==1.6.0 \
    xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
# SIA itself, as a wheel: the image may lack a setuptools new enough to build it (>= 77).
had_build=$([ -d build ] && echo yes || true)
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .gpu/wheels . 2> /dev/null
[ -n "$had_build" ] || rm -rf build
# --no-compile: this machine's .pyc files are for its Python, not 3.12, and would double the size.
python3 -m pip install -q --no-deps --no-index --no-compile "${platform[@]}" --target .gpu/site .gpu/wheels/*.whl
rm -rf .gpu/site/studio .gpu/site/bin .gpu/site/test  # a web UI, scripts, a stray top-level `test`
# bitsandbytes loads the library of torch's CUDA version exactly (torch 2.11 + cu130 there).
find .gpu/site/bitsandbytes -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda130.so' ! -name '*cpu*' -delete
tar -czf .gpu/site.tgz -C .gpu site && rm -rf .gpu/site .gpu/wheels
# Installed there only if the image's own copy is missing or too old for pydantic.
python3 -m pip download -q --no-deps "${platform[@]}" -d .gpu/opt typing_extensions==4.16.0
cp "$(command -v bwrap)" .gpu/bwrap/
# bwrap's libraries, and libseccomp (the sandbox builds its filter with it, through ctypes).
for lib in $(ldd "$(command -v bwrap)" | awk '/=> \// {print $3}' | grep -v -E '/libc\.so') \
           "$(ldconfig -p | awk '/libseccomp\.so\.2 .*x86-64/ {print $NF; exit}')"; do
    cp -L "$lib" .gpu/bwrap/lib/
done
model=$(.venv/bin/python -c "from sia.gateway.model_store import safetensors_dir; print(safetensors_dir())")
find "$model" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpu/model/ \;
du -sh .gpu && ls -la .gpu .gpu/bwrap/lib .gpu/model
