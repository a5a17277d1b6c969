# The README's two commands: `make demo` and `make test`. Both create .venv when it is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch first (these wheels are on the machines' disks); then the rest without build isolation so
# basicsr-fixed builds against the installed torch instead of pulling a second one.
TORCH  := torch==2.14.1 torchvision==0.29.1 setuptools==80.10.2 wheel
DEMO_OUT ?= demo_out
DEMO_ARGS ?= --quick

.PHONY: demo test venv clean-venv

venv: $(STAMP)

$(STAMP): setup.py requirements.txt requirements-dev.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	$(PY) -m pip check
	@touch $(STAMP)

# the contracts first (seconds): lint rules (ruff.toml), then the rooms' import layers (.importlinter)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo --no-cache
	$(PY) -m pytest -q -rs --durations=20

demo: $(STAMP)
	$(PY) scripts/demo.py $(DEMO_ARGS) --out $(DEMO_OUT)

clean-venv:
	rm -rf $(VENV)
