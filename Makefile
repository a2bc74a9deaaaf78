# rbridge: every target does the set-up it needs, idempotently, on a fresh
# Debian machine: system packages (apt), the Python venv (.venv/) and the R
# package rserver.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := r-base-core r-base-dev libzmq3-dev libmsgpack-dev r-cran-jsonlite
# R packages the tests use: real workflows (tests/test_packages.py) and the R suite
TEST_PACKAGES := r-cran-testthat r-cran-later r-cran-dplyr r-cran-tibble r-cran-ggplot2 r-cran-data.table \
	r-cran-survival r-cran-lme4 r-cran-forecast r-cran-zoo r-cran-xts r-cran-ttr
RSERVER_SOURCES := $(shell find rserver -type f -not -name '*.o' -not -name '*.so')

FUZZ_PACKAGES := clang-14 libclang-rt-14-dev
FUZZ_RUNS ?= 2000000
FUZZ_SOURCES := fuzz/fuzz_envelope.c rserver/src/mpack_reader.c rserver/src/protocol.c
FUZZ_ARROW_SOURCES := fuzz/fuzz_arrow.c rserver/src/arrow_read.c rserver/src/flatbuf.c
FUZZ_CERT_SOURCES := fuzz/fuzz_cert.c rserver/src/auth.c
FUZZ_PNG_SOURCES := fuzz/fuzz_png.c rserver/src/png_read.c
FUZZ_FLAGS := -g -O1 -Wall -Wextra -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

.PHONY: setup system venv rserver demo test test-system test-r test-python lint bench bench-quick bench-smoke \
	soak soak-smoke \
	fuzz fuzz-smoke memcheck clean

setup: system venv rserver

# Installs only what is missing, so a machine that has everything is untouched.
system:
	@missing=$$(for p in $(APT_PACKAGES) $(EXTRA_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:" $$missing; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

rserver: .stamp-rserver

.stamp-rserver: $(RSERVER_SOURCES) | system
	R CMD INSTALL --preclean --no-docs rserver   # headers are not tracked: rebuild all
	touch $@

demo: setup
	$(PY) examples/quickstart.py

test: setup test-system test-r test-python lint bench-smoke soak-smoke fuzz-smoke

test-system:
	$(MAKE) system EXTRA_PACKAGES="$(TEST_PACKAGES)"

test-r: setup test-system
	cd rserver/tests && Rscript testthat.R

test-python: setup test-system
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check bridge tests benchmarks examples protocol

bench: setup
	$(MAKE) -C benchmarks run

bench-quick: setup
	$(MAKE) -C benchmarks run QUICK=1

# CI does not run the benchmark; this checks that every workload runs (quick mode).
bench-smoke: setup
	$(MAKE) -C benchmarks smoke

# Reliability figures: a soak that must leave the worker and the client flat
# (RSS, fds, threads, handles, /dev/shm), times from deaths to WorkerDied and
# to an idle worker, latency under a flood (benchmarks/results/soak.md).
soak: setup
	$(PY) benchmarks/soak.py

soak-smoke: setup
	$(PY) benchmarks/soak.py --scale 0.01 --repeats 2 --out benchmarks/results/soak-smoke.md

# libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer on the C code
# that reads every byte a client sends: the msgpack reader and envelope peeking
# (seeded with the golden messages) and the Arrow IPC reader (seeded with the
# golden payloads). Inputs that crashed once stay as regressions.
fuzz/fuzz_envelope: $(FUZZ_SOURCES) rserver/src/rserver.h
	$(MAKE) system EXTRA_PACKAGES="$(FUZZ_PACKAGES)"
	clang-14 $(FUZZ_FLAGS) -Irserver/src $(FUZZ_SOURCES) -lmsgpackc -o $@

fuzz/fuzz_arrow: $(FUZZ_ARROW_SOURCES) rserver/src/arrow_format.h
	$(MAKE) system EXTRA_PACKAGES="$(FUZZ_PACKAGES)"
	clang-14 $(FUZZ_FLAGS) -Irserver/src $(FUZZ_ARROW_SOURCES) -o $@

fuzz/fuzz_cert: $(FUZZ_CERT_SOURCES) rserver/src/rserver.h
	$(MAKE) system EXTRA_PACKAGES="$(FUZZ_PACKAGES)"
	clang-14 $(FUZZ_FLAGS) -Irserver/src $(FUZZ_CERT_SOURCES) -lzmq -o $@

fuzz/fuzz_png: $(FUZZ_PNG_SOURCES) rserver/src/rserver.h
	$(MAKE) system EXTRA_PACKAGES="$(FUZZ_PACKAGES)"
	clang-14 $(FUZZ_FLAGS) -Irserver/src $(FUZZ_PNG_SOURCES) -lzmq -o $@

# Bounded by a number of runs, so that a run's length does not depend on the
# machine's speed; `timeout` is a safety net.
fuzz: fuzz/fuzz_envelope fuzz/fuzz_arrow fuzz/fuzz_cert fuzz/fuzz_png
	mkdir -p fuzz/out fuzz/out-arrow fuzz/out-cert fuzz/out-png
	./fuzz/fuzz_envelope fuzz/regressions/*
	timeout 1800 ./fuzz/fuzz_envelope -runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1 \
	  fuzz/out fuzz/corpus
	./fuzz/fuzz_arrow fuzz/regressions-arrow/* protocol/vectors/arrow/*.arrow
	timeout 1800 ./fuzz/fuzz_arrow -runs=$(FUZZ_RUNS) -max_len=8192 -print_final_stats=1 \
	  fuzz/out-arrow protocol/vectors/arrow
	timeout 1800 ./fuzz/fuzz_cert -runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1 \
	  fuzz/out-cert fuzz/corpus-cert
	timeout 1800 ./fuzz/fuzz_png -runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1 \
	  fuzz/out-png fuzz/corpus-png

# The R-facing C code (decoder, encoder, handle table, plot pages) under valgrind's memcheck,
# through the R tests that feed it hostile and random input.
memcheck: setup test-system
	$(MAKE) system EXTRA_PACKAGES=valgrind
	cd rserver/tests/testthat && R -d "valgrind --error-exitcode=9 -q" --vanilla -e \
	  'library(testthat); source("helper-vectors.R"); for (f in c("test-codec.R", "test-handles.R", "test-vectors.R", "test-arrow.R", "test-dispatch.R", "test-plots.R")) test_file(f, reporter = "summary", stop_on_failure = TRUE)'

fuzz-smoke:
	$(MAKE) fuzz FUZZ_RUNS=200000

clean:
	rm -rf $(VENV) .stamp-rserver rserver/src/*.o rserver/src/*.so .pytest_cache fuzz/out fuzz/out-arrow \
	  fuzz/out-cert fuzz/out-png fuzz/fuzz_envelope fuzz/fuzz_arrow fuzz/fuzz_cert fuzz/fuzz_png
