# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Both install what they need (virtualenv, pinned Python deps, the native
# Collector/Prometheus/Alertmanager built from their Go modules) idempotently;
# builds are cached in the git-ignored .cache/ folder.

PYTHON ?= python3
# Go (for the Collector/Prometheus/Alertmanager builds) where Debian-style installs put it
export PATH := $(PATH):/usr/local/go/bin
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv stack lint generate bench clean

demo: stack
	$(BIN)/redline demo

test: stack
	$(BIN)/ruff check instrumentation tests benchmarks
	$(BIN)/pytest -p no:cacheprovider

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,gpu]'
	touch $@

stack: venv
	$(BIN)/redline stack build

lint: venv
	$(BIN)/ruff check instrumentation tests benchmarks

# Regenerate the committed alert rules and dashboards from redline.yaml.
generate: venv
	$(BIN)/redline rules
	$(BIN)/redline dashboards
	$(BIN)/redline docs

bench: stack
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	-$(BIN)/redline stack down
	rm -rf .cache $(VENV)
