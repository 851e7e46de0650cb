# chainfs: `make demo` and `make test` are the two commands a new user types.
# Both install what is missing (Debian packages, npm packages) and build first.
SHELL := /bin/bash
.DEFAULT_GOAL := build

# Debian packages: the addons' build tools (g++, make, python3 for node-gyp;
# g++ brings gcc, which the tests use to build their gatefs), libfuse3's
# headers (libfuse3-dev, found by pkg-config) for the mount daemon and the
# tests' gatefs, fuse3 for fusermount3 (unmount; Debian's fuse3 also names it
# fusermount), qemu-utils (qemu-img/qemu-io: the oracle in tests), e2fsprogs
# (mkfs.ext4 -d), fuse2fs (ext4 tests; it brings libfuse2 for itself).
APT_PKGS := g++ make python3 pkg-config libfuse3-dev fuse3 qemu-utils e2fsprogs fuse2fs
# Benchmarks also need qemu-storage-daemon (qemu-system-common), fio, GNU time
# (peak RSS of a child), openssl (the hash anchor) and lz4 (the backup rows' bound).
BENCH_APT_PKGS := qemu-system-common fio time openssl lz4
NATIVE := native/build/Release/chainfs_native.node native/build/Release/chainfs_fuse3.node
SIZE ?= 4G

.PHONY: setup setup-bench build test demo bench clean

setup: .make/apt node_modules/.package-lock.json

.make/apt: Makefile
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p .make && touch $@

setup-bench: setup
	@missing=$$(for p in $(BENCH_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

node_modules/.package-lock.json: package-lock.json package.json
	npm ci --no-audit --no-fund
	@touch $@

$(NATIVE) &: native/chainfs_native.cc native/chainfs_fuse3.cc native/binding.gyp node_modules/.package-lock.json
	cd native && ../node_modules/.bin/node-gyp rebuild --nodedir=/usr --loglevel=warn >/dev/null

build: setup $(NATIVE)
	node_modules/.bin/tsc -p tsconfig.json

test: build
	node_modules/.bin/tsc -p test/tsconfig.json
	node_modules/.bin/vitest run

demo: build
	bash scripts/demo.sh

# The benchmark suite (bench/README.md); never part of `make test`.
# `make bench SIZE=1G` is the quick run; BENCH_ARGS passes more options.
bench: build setup-bench
	node_modules/.bin/tsc -p bench/tsconfig.json
	node dist/bench/bench/run.js --size $(SIZE) $(BENCH_ARGS)
	@# The other sources' and issue rows, each printing its own table: what
	@# changed (diff, overlays, streamed qcow2), a node of 500 replicas and
	@# compare, a 1 TiB v2 disk; backups (#12) and v2 mounted reads (#13),
	@# each also written to bench/results/<date>-<size>-{backup,v2}.md.
	node dist/bench/bench/delta.js --size $(SIZE)
	node dist/bench/bench/node.js --compare-size $(SIZE)
	node dist/bench/bench/spdk.js
	node dist/bench/bench/backup.js --size $(SIZE)
	node dist/bench/bench/v2.js --size $(SIZE)

clean:
	rm -rf dist native/build .make
