#!/usr/bin/env python3
"""Reference task agent for TriMul: asks the target model for a `custom_kernel` program.

Run: python target_agent.py --dataset_dir D --working_dir W
Reads D/task.md, D/reference.py, D/pytorch_reference.py, D/feedback_cases.json and D/items.json;
asks the target model through the OpenAI-compatible endpoint in OPENAI_BASE_URL (the call tagged
with the first item of D/items.json) for a program, extracts its code, checks it (it parses, it
defines custom_kernel, and with `self_test` it matches the reference on the smallest feedback case
in a child process) and writes it as W/solution.py. When no attempt gives a usable program, the
PyTorch reference solution is written instead, so the agent always submits a correct program.
W/agent_execution.json records every attempt. The SCAFFOLD block holds its settings.
"""

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

FENCE = "`" * 3  # spelled out so that this file itself can travel inside a fenced code block
SCAFFOLD = {
    "instruction": ("You are an expert GPU kernel engineer. Write a fast and correct PyTorch/Triton implementation "
                    "of the operator below."),
    "show_reference": True,
    "temperature": 0.0,
    "max_tokens": 768,
    "retries": 2,
    "self_test": True,
    "self_test_timeout_s": 120,
}

# Runs in a child: READY once torch and the reference import (else the check cannot run here),
# then the candidate on one case against the reference; exit 0 only when it matches.
SELF_TEST = r"""
import importlib.util, json, os, sys
import torch
from sia.tasks.trimul.reference import make_inputs, reference_kernel
from sia.tasks.trimul.tolerance import compare
print("READY", flush=True)
case = json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("candidate", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
inputs = make_inputs(**case, device="cpu")
ok, reason = compare(module.custom_kernel(inputs), reference_kernel(inputs))
print("OK" if ok else "WRONG: " + reason, flush=True)
sys.exit(0 if ok else 1)
"""


def read(dataset_dir, name, default=""):
    try:
        with open(os.path.join(dataset_dir, name), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return default


def build_messages(task, reference):
    user = task
    if SCAFFOLD["show_reference"] and reference:
        user += f"\n\n## reference.py\n\n{FENCE}python\n{reference}\n{FENCE}"
    user += (f"\n\nReply with one {FENCE}python code block: a complete module defining custom_kernel(inputs) "
             "that returns the output tensor.")
    return [{"role": "system", "content": SCAFFOLD["instruction"]}, {"role": "user", "content": user}]


def ask(messages, item, temperature):
    body = {"model": os.environ.get("SIA_MODEL", "default"), "messages": messages,
            "max_tokens": SCAFFOLD["max_tokens"], "temperature": temperature}
    headers = {"Content-Type": "application/json",
               "Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")}
    if item:
        body["metadata"] = {"item": item}
        headers["X-SIA-Item"] = item
    request = urllib.request.Request(os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions",
                                     data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=600) as resp:
        return json.loads(resp.read())["choices"][0]["message"]["content"]


def extract_program(text):
    """The last fenced code block defining custom_kernel, else the whole text if it does."""
    blocks = re.findall(FENCE + r"(?:python|py)?[ \t]*\n(.*?)" + FENCE, text or "", flags=re.S)
    found = [b for b in blocks if "def custom_kernel" in b]
    if found:
        return found[-1]
    return text if text and "def custom_kernel" in text and FENCE not in text else None


def static_problem(program):
    """Why `program` cannot be a solution (None: it parses and defines custom_kernel)."""
    if program is None:
        return "no code block defining custom_kernel"
    try:
        tree = ast.parse(program)
    except SyntaxError as exc:
        return f"SyntaxError line {exc.lineno}: {exc.msg}"
    if not any(isinstance(n, ast.FunctionDef) and n.name == "custom_kernel" for n in tree.body):
        return "no top-level def custom_kernel"
    return None


def self_test(program, case):
    """(usable, note): the program run on `case` against the reference in a child process. When the
    check itself cannot run here (torch does not load), the program is kept untested."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        env = dict(os.environ, TRITON_INTERPRET="1")
        try:
            proc = subprocess.run([sys.executable, "-c", SELF_TEST, path, json.dumps(case)], capture_output=True,
                                  text=True, timeout=SCAFFOLD["self_test_timeout_s"], env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            return False, "self-test timed out"
    if "READY" not in proc.stdout:
        return True, "self-test unavailable here: " + proc.stderr.strip()[-300:]
    if proc.returncode == 0:
        return True, "self-test passed"
    return False, "self-test failed: " + (proc.stdout + proc.stderr).strip()[-600:]


def smallest_case(dataset_dir):
    try:
        cases = json.loads(read(dataset_dir, "feedback_cases.json", "[]"))
    except ValueError:
        return None
    cases = [{k: c[k] for k in ("B", "N", "C", "distribution", "masked", "seed")} for c in cases if isinstance(c, dict)]
    return min(cases, key=lambda c: c["B"] * c["N"] * c["N"] * c["C"]) if cases else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--working_dir", required=True)
    args = parser.parse_args()
    try:
        items = json.loads(read(args.dataset_dir, "items.json", "[]"))
    except ValueError:
        items = []
    item = items[0] if items else None
    messages = build_messages(read(args.dataset_dir, "task.md"), read(args.dataset_dir, "reference.py"))
    case = smallest_case(args.dataset_dir)
    trace = {"item": item, "attempts": []}
    program = None
    for attempt in range(SCAFFOLD["retries"] + 1):
        temperature = SCAFFOLD["temperature"] if attempt == 0 else max(SCAFFOLD["temperature"], 0.7)
        record = {"attempt": attempt}
        try:
            completion = ask(messages, item, temperature)
        except Exception as exc:  # network or server error: try again
            record["error"] = f"{type(exc).__name__}: {exc}"
            trace["attempts"].append(record)
            continue
        candidate = extract_program(completion)
        record["completion_chars"] = len(completion)
        problem = static_problem(candidate)
        if problem is None and SCAFFOLD["self_test"] and case is not None:
            usable, note = self_test(candidate, case)
            record["self_test"] = note
            problem = None if usable else note
        record["problem"] = problem
        trace["attempts"].append(record)
        if problem is None:
            program = candidate
            break
    trace["fallback"] = program is None
    if program is None:
        program = read(args.dataset_dir, "pytorch_reference.py")
    os.makedirs(args.working_dir, exist_ok=True)
    with open(os.path.join(args.working_dir, "solution.py"), "w", encoding="utf-8") as f:
        f.write(program)
    with open(os.path.join(args.working_dir, "agent_execution.json"), "w", encoding="utf-8") as f:
        json.dump(trace, f, indent=1)


if __name__ == "__main__":
    main()
