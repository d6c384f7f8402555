# The two commands: `make demo` and `make test`. Everything they need is installed here,
# so they work on a fresh machine from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest system-deps venv up clean bench

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) system-deps lint typecheck pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# PostgreSQL server binaries for the store tests (Debian's package).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
		echo "installing PostgreSQL (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@# Debian's Chromium for the dashboard's Playwright tests (never `playwright install`)
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Chromium (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@# Debian's redis-server, built with TLS (the embedded valkey is not), for the live TLS
	@# test (tests/broker/test_tls.py). Only its binary is used: the test starts its own
	@# server on a free port, so the package's own service is stopped and disabled
	@if ! command -v redis-server >/dev/null; then \
		echo "installing redis-server (Debian package, for the TLS test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		if [ -d /run/systemd/system ]; then \
			systemctl disable --now redis-server.service >/dev/null 2>&1 || true; \
		elif [ -x /etc/init.d/redis-server ]; then \
			/etc/init.d/redis-server stop >/dev/null 2>&1 || true; \
			update-rc.d redis-server disable >/dev/null 2>&1 || true; \
		fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Three test processes on two cores: most of a test's time is real workers starting and
# answering, so they overlap well (measured: 12 min with 3, about 15 with 2, same suite).
# Each process has its own Valkey, SQLite and PostgreSQL.
TEST_WORKERS ?= 3

pytest: $(STAMP) system-deps
	@# bytecode for the hundreds of processes the tests start: with PYTHONDONTWRITEBYTECODE
	@# set (as on this machine and CI) each of them compiled taskworks' modules again,
	@# about 0.16 s of CPU per process start (measured)
	$(PY) -m compileall -q taskworks tests bench examples >/dev/null
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --durations=15

# Side-by-side benchmarks (bench/): full size; BENCH_SIZE=tiny for a quick check.
# Writes bench/results/latest.md and latest.png.
bench: $(STAMP)
	$(PY) -m bench --size $${BENCH_SIZE:-full}

up: $(STAMP)
	$(VENV)/bin/taskworks up

clean:
	rm -rf $(VENV) .taskworks .pytest_cache .mypy_cache .ruff_cache
