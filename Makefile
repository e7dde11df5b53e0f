# `make test` takes a fresh machine (Python 3.11+) to a full test run; CI calls exactly this.
PYTHON ?= python3
VENV := venv

.PHONY: test clean

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

# The same ./venv `pulumi up` uses (Pulumi.yaml), plus the test tools.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
