# Kiln — developer entry points.
#
#   make demo   install what is missing, build (release), fetch the model, run the demo
#   make test   install what is missing, fetch the model, run the whole test suite
#
# Both are safe to rerun: installs and downloads happen only when something is
# missing. See docs/setup.md for what gets installed and the variables below.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# llvm-sys (through inkwell) finds LLVM 19 with this; Debian's llvm-19-dev puts it here.
export LLVM_SYS_191_PREFIX ?= /usr/lib/llvm-19
# Snapshot tests compare against the committed .snap files and never write them.
export INSTA_UPDATE := no
# Where scripts/fetch-model.sh puts the real model; tests use it when present.
export KILN_MODEL_DIR ?= $(CURDIR)/.cache/models
export KILN_SMOLLM2_GGUF ?= $(KILN_MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

KILN := ./target/release/kiln

# The demo: the furthest working step of the main job, one command per line,
# run in order (make echoes each line before running it): import SmolLM2 from
# its GGUF into a Hugging Face folder (once), show the IR of its first layer
# before and after the -O2 pipeline (RoPE fused into attention, merged
# projections, fused elementwise chains), and generate text with the
# reference interpreter, plain and as a chat.
SMOLLM2_DIR := $(KILN_MODEL_DIR)/SmolLM2-135M-Instruct
define DEMO_STEPS
$(KILN) targets
$(KILN) dump-ir $(SMOLLM2_DIR) --layers 1
$(KILN) dump-ir $(SMOLLM2_DIR) --layers 1 -O2 --pass-timing
$(KILN) run $(SMOLLM2_DIR) --interp --prompt "The capital of France is" --max-tokens 24
$(KILN) run $(SMOLLM2_DIR) --interp --chat --prompt "Name three colors of the rainbow." --max-tokens 48
endef

.PHONY: help deps model build release test demo check-runtime-deps lint fmt

help:
	@echo "make demo                 install deps, build (release), fetch the model, run the demo"
	@echo "make test                 install deps, fetch the model, run the whole test suite"
	@echo "make deps                 install LLVM 19 from apt if missing"
	@echo "make model                fetch SmolLM2-135M-Instruct Q4_1 into $(KILN_MODEL_DIR)"
	@echo "make build | release      cargo build (debug | release)"
	@echo "make check-runtime-deps   fail if kiln-runtime depends on LLVM"
	@echo "make lint | fmt           rustfmt --check + clippy -D warnings | rustfmt"

deps:
	@bash scripts/install-deps.sh

model:
	@bash scripts/fetch-model.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release --bin kiln

test: deps model
	@bash scripts/test.sh

$(SMOLLM2_DIR)/config.json: $(KILN_SMOLLM2_GGUF) | release
	$(KILN) import $(KILN_SMOLLM2_GGUF) -o $(SMOLLM2_DIR) --force

demo: deps model release $(SMOLLM2_DIR)/config.json
	$(DEMO_STEPS)

check-runtime-deps:
	@bash scripts/check-runtime-deps.sh

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --features kiln-runtime/cuda -- -D warnings

fmt:
	$(CARGO) fmt --all
