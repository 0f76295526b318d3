#!/usr/bin/env bash
# Issue 17's check on a GPU, one call of under 10 minutes. Pack first (benchmarks/gpu_pack.sh),
# then on the GPU machine, from the repository root, with .gpu carried:
#     bash benchmarks/gpu_check.sh            # results and logs under $OUT (default /tmp/gpu_check)
# 1. the installed versions and the GPU;
# 2. TriMul: `sia.tasks.trimul.gpu_check`, the shipped PyTorch and Triton solutions through the
#    sandboxed harness against a direct CUDA-event timing of the same calls. It runs isolated
#    (bubblewrap) first; only if that fails does it run again with --unsafe-sandbox, and the log
#    says which isolation each run had;
# 3. `benchmarks/grpo_step.py`: seconds per SFT, GRPO and entropic step with Unsloth and with
#    TRL + PEFT on CUDA, on a randomly initialised model of SmolLM2-135M's shape (the weights
#    cannot travel). Its rewards are those of random weights, so only the times mean anything.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PATH="$PWD/.gpu/bwrap:$PATH"
[ -f .gpu/site.tgz ] || { echo "gpu_check.sh: no .gpu/site.tgz: run benchmarks/gpu_pack.sh and carry .gpu"; exit 2; }
# Into the interpreter's own site-packages, not PYTHONPATH: the sandbox gives its children a
# scrubbed environment and binds the interpreter's import path (sandbox.bwrap.python_paths).
site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
tar -xzf .gpu/site.tgz --strip-components=1 -C "$site"
# SIA itself from this tree; where the image's setuptools cannot build it, the wheel packed with .gpu.
python3 -m pip install -q --no-deps --no-build-isolation --no-index . > "$OUT/install.log" 2>&1 \
    || { echo "building SIA here failed (install.log); installing the packed wheel"
         python3 -m pip install -q --no-deps --no-index .gpu/sia-*.whl >> "$OUT/install.log" 2>&1; } \
    || { tail -5 "$OUT/install.log"; exit 2; }
# bwrap also runs with the scrubbed environment, so a library it lacks goes where the loader looks.
for lib in .gpu/bwrap/lib/*; do
    ldconfig -p | grep -q "$(basename "$lib")" || { cp "$lib" /usr/local/lib/ && echo "added $(basename "$lib")"; }
done
ldconfig
repo=$PWD
cd /tmp  # from the repository root, its sia/ folder would shadow the installed package

echo "== 1. versions"
nvidia-smi -L
python3 -c "import torch, transformers, peft, trl, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__, '| triton', triton.__version__)"
bwrap --version || echo "bwrap does not run here"

echo "== 2. TriMul through the sandboxed harness vs direct CUDA events"
timeout 200 python3 -m sia.tasks.trimul.gpu_check --json "$OUT/trimul.json" 2>&1 | tee "$OUT/trimul.log"
if [ "${PIPESTATUS[0]}" != 0 ]; then
    echo "-- isolated run failed (above); again with --unsafe-sandbox (rlimits only)"
    timeout 200 python3 -m sia.tasks.trimul.gpu_check --unsafe-sandbox --json "$OUT/trimul_unsafe.json" 2>&1 \
        | tee "$OUT/trimul_unsafe.log"
fi

echo "== 3. GRPO / entropic / SFT steps, Unsloth and TRL + PEFT"
REPO="$repo" python3 - <<'PY'
import torch, transformers
import os
config = transformers.AutoConfig.from_pretrained(os.environ["REPO"] + "/.gpu/model")
torch.manual_seed(0)
transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained("/tmp/base")
transformers.AutoTokenizer.from_pretrained(os.environ["REPO"] + "/.gpu/model").save_pretrained("/tmp/base")
print("random-init base model in /tmp/base")
PY
timeout 300 python3 "$repo/benchmarks/grpo_step.py" --base /tmp/base --methods sft,grpo,entropic \
    --backends unsloth,trl --steps 3 --timeout 240 --json "$OUT/grpo_step.json" 2>&1 | tee "$OUT/grpo_step.log"
echo "== done"
