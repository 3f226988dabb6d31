# bakehouse — see README.md. `make demo` is the main job, `make test` the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP_PY  := $(VENV)/.installed
STAMP_NPM := node_modules/.installed
STAMP_DEB := .bakehouse/.debian-packages
DEMO_BASE := .bakehouse/bases/bookworm-minbase.tar.zst
BOOT_TREE := .bakehouse/bases/bookworm-boot.tar.zst
DEMO_DISK := .bakehouse/bases/bookworm-bootable.qcow2
DEB_PKGS  := mmdebstrap busybox-static zstd e2fsprogs qemu-utils unzip binutils bubblewrap fdisk dosfstools mtools packer
CARGO     ?= cargo
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup test lint fmt unit demo bench package deploy clean

help:
	@echo "make demo     bake the demo image locally and resolve it (the main job)"
	@echo "make test     the whole suite: lint, unit, integration (moto), ASL and SAM checks"
	@echo "make bench    benchmarks; prints figures and ratios measured in one run"
	@echo "make package  build every Lambda with cargo lambda into zips"
	@echo "make deploy   sam deploy with infra/samconfig.toml (needs an AWS account)"

## setup: Python tools in .venv, Node tools in node_modules, Debian packages
## (qemu-system-x86 from bookworm-backports, like the preinstalled qemu-utils).
STAMP_QEMU := .bakehouse/.qemu-system
setup: $(STAMP_PY) $(STAMP_NPM) $(STAMP_DEB) $(STAMP_QEMU)

$(STAMP_QEMU): | $(STAMP_DEB)
	scripts/install-qemu-system.sh
	touch $@

$(STAMP_PY): requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(STAMP_NPM): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

$(STAMP_DEB):
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	mkdir -p $(dir $@) && touch $@

fmt:
	$(CARGO) fmt --all

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The sandbox and Debian build tests run on the demo's bookworm base.
unit: setup $(DEMO_BASE) $(BOOT_TREE) $(DEMO_DISK)
	$(CARGO) test --workspace

## test: everything CI runs.
test: lint unit
	@echo "make test: all checks passed"

## demo: recipes/demo.yaml baked on a bootable Debian bookworm disk (made
## once from Debian packages, cached), registered and resolved. A second run
## is a cache hit. The output boots (tests/boot.rs boots it).
BAKEHOUSE := target/debug/bakehouse

$(DEMO_BASE): | $(STAMP_DEB)
	mkdir -p $(dir $@)
	mmdebstrap --quiet --variant=minbase --format=tar bookworm - /etc/apt/sources.list.d/debian.sources </dev/null \
	  | zstd -q -T0 -o $@.tmp
	mv $@.tmp $@

## The bootable tree: minbase plus Debian's cloud kernel, initramfs-tools,
## udev, systemd and GRUB for BIOS (grub-pc-bin). builder.disk turns it into
## a bootable disk (the boot tests and the demo's base).
$(BOOT_TREE): scripts/make-boot-tree.sh | $(STAMP_DEB)
	scripts/make-boot-tree.sh $@

## The demo's base: the bootable tree as a GPT disk, made by bakehouse
## (recipes/debian-bootable.yaml, builder.disk) once and cached.
$(DEMO_DISK): $(BOOT_TREE) recipes/debian-bootable.yaml | $(STAMP_DEB)
	$(CARGO) build --quiet --bin bakehouse
	scripts/make-demo-base.sh $@ $(BAKEHOUSE)

demo: setup $(DEMO_DISK)
	$(CARGO) build --quiet --bin bakehouse
	$(BAKEHOUSE) build recipes/demo.yaml
	$(BAKEHOUSE) image resolve demo --provider local

## bench: figures and ratios measured in one run: a bootable image from
## packages vs diskimage-builder, registry (10,000 versions in moto), local
## bake vs virt-customize and the cache hit, Lambda zip sizes and init times.
STAMP_VC := .bakehouse/.virt-customize
$(STAMP_VC): | $(STAMP_DEB)
	scripts/install-virt-customize.sh
	touch $@

## diskimage-builder (PyPI, in .venv) and what it calls, for the bootable
## image benchmark (scripts/bench-bootable-base.sh).
STAMP_DIB := $(VENV)/.diskimage-builder
$(STAMP_DIB): requirements-bench.txt | $(STAMP_PY) $(STAMP_DEB)
	command -v sudo >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo debootstrap >/dev/null; }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

bench: setup $(STAMP_VC) $(STAMP_DIB) $(DEMO_BASE) $(DEMO_DISK) package
	$(CARGO) build --quiet --bin bakehouse
	scripts/bench-bootable-base.sh $(BAKEHOUSE)
	$(CARGO) bench --bench registry
	$(CARGO) bench --bench local_bake
	$(CARGO) bench --bench lambda_init
	$(CARGO) bench --bench validate
	$(CARGO) bench --bench test_phase
	$(CARGO) bench --bench transitions

## package: every function with cargo lambda (x86_64, provided.al2023) into
## target/lambda/NAME/bootstrap.zip, then a glibc check (<= 2.34).
FUNCTIONS := $(notdir $(wildcard functions/*))
## functions/test is the package test-step (`test` is Rust's own crate).
PACKAGES  := $(patsubst test,test-step,$(FUNCTIONS))
package: setup
	cargo lambda build --release --output-format zip $(addprefix -p ,$(PACKAGES))
	scripts/check-glibc.sh 2.34 $(foreach f,$(PACKAGES),target/lambda/$(f)/bootstrap)

## deploy: needs an AWS account and the SAM CLI (pip install aws-sam-cli);
## sam build runs cargo lambda for every function. Not run in tests.
deploy: setup
	cd infra && sam build --config-file samconfig.toml && sam deploy --config-file samconfig.toml

clean:
	rm -rf target .bakehouse node_modules $(VENV)
