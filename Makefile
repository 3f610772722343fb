# The two commands of the README: `make up` starts Gantry, `make test` runs every test.
# Both do all set-up from a fresh clone: a virtualenv with the project installed from pyproject.toml;
# the tests also fetch Apache Kafka's jars with Maven (tools/kafka/pom.xml), build a Kubernetes
# control plane from Go modules (tools/k8s, about 10 minutes the first time, cached after) and
# install PostgreSQL, Chromium (the state board's browser test) and wrk (the ingress benchmark's load
# generator) from Debian's packages when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install up test unit integration e2e lint fmt docs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

up: install
	$(BIN)/gantry up

test: install lint
	bash tools/kafka/fetch.sh
	bash tools/k8s/build.sh
	$(BIN)/python -m pytest -ra

unit: install
	$(BIN)/python -m pytest -q tests/unit

integration: install
	bash tools/kafka/fetch.sh
	bash tools/k8s/build.sh
	$(BIN)/python -m pytest -q tests/integration

e2e: install
	bash tools/k8s/build.sh
	$(BIN)/python -m pytest -q tests/e2e

docs: install
	$(BIN)/python -m shared.asyncapi > docs/asyncapi.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
