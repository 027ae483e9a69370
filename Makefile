# The README's commands. `make book` sets up and builds the book; `make test` sets up and runs the tests.
PYTHON ?= python3
# A matching torch/torchvision pair, installed only when none is importable. On aarch64
# use: make book TORCH_PKGS="torch==2.9.1 torchvision==0.24.1"
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
# A sibling shared/datasets folder is a local data mirror (our build machines have one).
ifeq ($(origin LSUV_DATA_DIR), undefined)
LSUV_DATA_DIR := $(wildcard $(CURDIR)/../shared/datasets)
endif
export LSUV_DATA_DIR
BUILD_ARGS ?=
# Quarto renders the site; when none is on PATH, setup installs one here (ignored by git).
QUARTO_HOME := $(CURDIR)/.quarto-cli

.PHONY: setup system book test bench clean

setup:
	$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PYTHON) -m pip install $(TORCH_PKGS)
	$(PYTHON) -m pip install -e '.[book,test]'
	@command -v quarto >/dev/null 2>&1 || [ -x $(QUARTO_HOME)/bin/quarto ] || tools/install_quarto.sh $(QUARTO_HOME)

# Debian/Ubuntu, as root: the Fashion-MNIST mirror and the browser the site tests use.
system:
	apt-get update
	apt-get install -y dataset-fashion-mnist chromium chromium-driver

book: setup
	$(PYTHON) tools/build_book.py --timings $(BUILD_ARGS)

test: setup
	$(PYTHON) -m pytest

bench: setup
	$(PYTHON) benchmarks/epoch_speed.py
	$(PYTHON) benchmarks/seeds_speed.py
	$(PYTHON) benchmarks/lsuv_speed.py
	$(PYTHON) benchmarks/book_time.py

clean:
	rm -rf _build .quarto-cli
