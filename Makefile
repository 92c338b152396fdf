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
# NVIDIA's PTX assembler (scripts/fetch-ptxas.sh): tests assemble every PTX module Kiln emits.
export KILN_PTXAS ?= $(CURDIR)/.cache/ptxas/ptxas

KILN := ./target/release/kiln

# The demo: the main job, one command per line, run in order (make echoes each
# line before running it): import SmolLM2 from its GGUF into a Hugging Face
# folder (once), show the IR of its first layer after the -O2 pipeline (RoPE
# fused into attention, merged projections, fused elementwise chains), compile
# it to a native artifact for this CPU (bf16 weights), chat with it, and
# measure it; then a Mixture-of-Experts version made by `moefy`, checked with
# `kiln eval` against the original, compiled, and run with its experts offloaded to disk (4 of 8
# per layer cached in RAM, Kiln's router-EMA policy, speculative prefetch) over real text.
SMOLLM2_DIR := $(KILN_MODEL_DIR)/SmolLM2-135M-Instruct
DEMO_ARTIFACT := target/demo/SmolLM2-135M-Instruct.bf16.kiln
# The MoE version (8 experts, top-2) whose experts the last demo lines offload to disk.
MOE_ARTIFACT := target/demo/SmolLM2-135M-Instruct.moe8.bf16.kiln
CPU_O2 := canonicalize,cse,const-fold,eqsat{rules=rope+layout+algebra},fuse-elementwise,cse,dce
define DEMO_STEPS
$(KILN) targets
$(KILN) dump-ir $(SMOLLM2_DIR) --layers 1 -O2 --pass-timing
$(KILN) compile $(SMOLLM2_DIR) --weights bf16 -o $(DEMO_ARTIFACT)
$(KILN) run $(DEMO_ARTIFACT) --chat --prompt "What is the capital of France?" --max-tokens 32
$(KILN) run $(DEMO_ARTIFACT) --chat --prompt "Name three colors of the rainbow." --max-tokens 48
$(KILN) bench $(DEMO_ARTIFACT) --prompt-len 128 --gen 64
$(KILN) eval $(SMOLLM2_DIR) --text /usr/share/common-licenses/GPL-3 --tokens 256 --chunk 128 --passes 'moefy{experts=8,top-k=4}'
$(KILN) compile $(SMOLLM2_DIR) --weights bf16 --passes 'moefy{experts=8,top-k=2},moe-dispatch,$(CPU_O2)' -o $(MOE_ARTIFACT)
$(KILN) bench $(MOE_ARTIFACT) --prompt-len 64 --gen 64 --text /usr/share/common-licenses/GPL-3 --expert-cache 4 --policy router-ema --prefetch 1 --trace target/demo/offload-trace.json
$(KILN) offload-report target/demo/offload-trace.json --replay
endef

.PHONY: help deps model ptxas build release test demo check-runtime-deps lint fmt

help:
	@echo "make demo                 install deps, build (release), fetch the model, run the demo"
	@echo "make test                 install deps, fetch the model, run the whole test suite"
	@echo "make deps                 install LLVM 19 from apt if missing"
	@echo "make model                fetch SmolLM2-135M-Instruct Q4_1 into $(KILN_MODEL_DIR)"
	@echo "make ptxas                fetch NVIDIA's ptxas (PTX assembler, no GPU needed) into .cache/ptxas"
	@echo "make build | release      cargo build (debug | release)"
	@echo "make check-runtime-deps   fail if kiln-runtime depends on LLVM"
	@echo "make lint | fmt           rustfmt --check + clippy -D warnings | rustfmt"

deps:
	@bash scripts/install-deps.sh

model:
	@bash scripts/fetch-model.sh

ptxas:
	@bash scripts/fetch-ptxas.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release --bin kiln

test: deps model ptxas
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
