# The README's two set-up commands: `make demo` (main job on the built-in default)
# and `make test` (the test suite). Both create the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robustmm-installed

.PHONY: setup demo test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/robustmm attack

test: setup
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
