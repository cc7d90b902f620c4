# The README's two commands: `make demo` and `make test`. Both build .venv from scratch when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test lint data web chromium clean

# nudity==0.2.3 (MIT) ships Google's MobileNetV1 ImageNet graph (retrained_graph.pb); --no-deps because its
# declared dependencies pull TensorFlow, which we never need (we read the .pb with tensorboard's protobufs).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,deploy,litert,web,android]'
	$(BIN)/python -m pip install -q --no-deps nudity==0.2.3
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist (the real IDX files); optional: digits is the fallback.
data:
	@if [ -d $(FASHION_MNIST) ]; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if command -v apt-get >/dev/null && { [ -z "$$SUDO" ] || sudo -n true 2>/dev/null; }; then \
		($$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
		&& echo "installed Fashion-MNIST into $(FASHION_MNIST)" \
		|| echo "note: could not install dataset-fashion-mnist; the demo falls back to scikit-learn's digits"; \
	else \
		echo "note: Fashion-MNIST missing and apt-get unavailable (install Debian's dataset-fashion-mnist); using digits"; \
	fi

# The browser runtime of `export --format web` and `bench --runtime web`: Debian's Chromium (Playwright drives it;
# nothing downloads a browser) and onnxruntime-web from package-lock.json (npm ci). `make test` needs both.
web: chromium node_modules/.installed

chromium:
	@if command -v chromium >/dev/null || [ -n "$$MOBILENETS_CHROMIUM" ]; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if command -v apt-get >/dev/null && { [ -z "$$SUDO" ] || sudo -n true 2>/dev/null; }; then \
		($$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		 { $$SUDO apt-get update -q >/dev/null 2>&1 && \
		   $$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }) \
		&& echo "installed Chromium ($$(command -v chromium))" \
		|| { echo "error: could not install Chromium: run apt-get install chromium"; exit 1; }; \
	else \
		echo "error: no Chromium: install it (apt-get install chromium) or set MOBILENETS_CHROMIUM=/path/to/chrome"; \
		exit 1; \
	fi

node_modules/.installed: package.json package-lock.json
	@if ! command -v npm >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		($$SUDO apt-get install -y -q npm >/dev/null 2>&1 || \
		 { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q npm >/dev/null 2>&1; }) \
		|| { echo "error: no npm: install Node.js and npm (apt-get install npm), then run make again"; exit 1; }; \
	fi
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(BIN)/.installed data
	@$(MAKE) --no-print-directory web || echo "note: the web export (export --format web) needs Chromium and npm"
	$(BIN)/mobilenets demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest-xdist workers by default (TEST_WORKERS=1 for one process): most tests are single-threaded Python
# (tracing, conversion, verification), so two processes use both cores of a 2-core machine; tests/conftest.py gives
# each worker's torch and runtimes its share of the cores.
TEST_WORKERS ?= 2
test: $(BIN)/.installed data web lint
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
