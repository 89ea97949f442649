# vmforge: the two commands.
#   make demo   set everything up, then run the main job on the default guest
#   make test   set everything up, then run the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.vmforge-installed
PLUGINS := $(sort $(wildcard src/plugins/*/pyproject.toml))
FAST_SRC := $(wildcard src/_fast/*.pyx src/_fast/*.pxd src/_fast/*.pxi)

.PHONY: setup guests demo test typecheck lint bench clean

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml $(FAST_SRC) $(PLUGINS) tools/setup-host.sh
	bash tools/setup-host.sh
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip 'setuptools>=77' wheel 'cython>=3.0.10'
	$(PIP) install -q --no-build-isolation -e '.[test]'
	$(PIP) install -q --no-build-isolation $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

# the guests the demo and the tests boot, built from Debian's sources by the
# project's recipes and cached outside the repository (guests/README.md)
guests: setup
	$(PYTHON) guests/build.py all
	$(PY) -m vmforge.guests record --machine riscv-virt --memory 256M \
	    --kernel "$$($(PYTHON) guests/build.py --print-path linux-riscv64)" \
	    --initrd "$$($(PYTHON) guests/build.py --print-path initramfs-riscv64)" \
	    --append "console=ttyS0" \
	    --disk "$$($(PY) -c 'from vmforge.guests import cache_dir; print(cache_dir())')/guests/disk.qcow2" \
	    --nic user

# boots Linux + busybox on the riscv-virt machine (vmforge's own RISC-V CPU);
# the console is this terminal: 'poweroff -f' or Ctrl-A X ends it
demo: guests
	$(VENV)/bin/vmforge run

test: guests
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(PY) -m pytest -q --benchmark-disable

# mypy on the package vmforge ([tool.mypy] in pyproject.toml), seen through a link
# named vmforge since its folder is src/core
typecheck: setup
	mkdir -p build/mypy && ln -sfn ../../src/core build/mypy/vmforge
	$(PY) -m mypy

bench: setup
	$(PY) -m pytest benchmarks -q

clean:
	rm -rf $(VENV) build src/_fast/*.c src/_fast/*.so
