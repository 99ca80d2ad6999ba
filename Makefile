# lodis — make targets. `make help` lists them.
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
UNITDIR ?= $(LIBDIR)/systemd/system
POLKITDIR ?= $(PREFIX)/share/polkit-1/rules.d
GENERATORDIR ?= $(LIBDIR)/systemd/system-generators
DATADIR ?= $(PREFIX)/share
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GO ?= go
# BIN is the binary that build makes and install copies (make install BIN=...).
BIN := bin/lodis
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X github.com/lodis/lodis/internal/buildinfo.Version=$(VERSION) -X github.com/lodis/lodis/internal/buildinfo.Commit=$(COMMIT)"
GO_SOURCES := $(shell find . -name '*.go' -not -path './.demo/*' 2>/dev/null) go.mod go.sum
UNITS := $(wildcard units/*.socket units/*.service units/*.target units/*.path)
# The worker templates that units/lodis-worker.conf is a drop-in of.
WORKER_TEMPLATES := lodis@.service lodis-alt@.service

.PHONY: bench-micro all build test test-unit test-integration install uninstall demo demo-stop bench clean help deps lint deb nix-vendor-hash

all: build

help:
	@echo "make build            build bin/lodis"
	@echo "make test             install test dependencies, then lint, unit tests (-race) and real-systemd tests"
	@echo "make demo             boot a throwaway systemd, enable lodis on ports 8080..8089, show status (Ctrl-C or make demo-stop ends it)"
	@echo "make bench            run the benchmarks in a throwaway systemd, write bench/results/report.md (QUICK=1: under 2 minutes)"
	@echo "make install          install binary and units (DESTDIR, PREFIX honoured)"
	@echo "make deb              build dist/lodis_<version>_<arch>.deb (packaging/deb/build.sh)"
	@echo "make nix-vendor-hash  print the vendorHash nix/package.nix needs for go.mod/go.sum"
	@echo "make clean            remove build output"

build: $(BIN)

# The binary is static (CGO_ENABLED=0), as the package and the Nix build make
# it: no dynamic loader at each worker start, no C library pages mapped in.
$(BIN): $(GO_SOURCES)
	@mkdir -p $(dir $@)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/lodis

# deps installs what the tests and the demo need (Debian packages), or says how.
deps:
	@test/deps.sh

# BENCH is the benchmark's own module (bench/go.mod, lodis replaced by this
# tree): its dependencies (plotting, fonts) stay out of the product's go.mod.
BENCH := bench

# lint: gofmt over every file of both modules, go vet in each.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd $(BENCH) && $(GO) vet ./...

TESTSUM = bin/testsum -state bin/testsum.json

bin/testsum: test/cmd/testsum/main.go
	@mkdir -p bin
	$(GO) build -o $@ ./test/cmd/testsum

# UNIT_PKGS are the packages whose tests need no machine, BENCH_UNIT_PKGS
# those of the benchmark's module (listed from inside it); the packages under
# test/ (bench/test for the benchmark) boot machines.
UNIT_PKGS = $$($(GO) list ./... | grep -v /test/)
BENCH_UNIT_PKGS = $$($(GO) list ./... | grep -v '/bench/test$$')

# test-unit compiles every test binary first (running none of their tests),
# so that no test runs beside the compiler on a cold build cache. Both
# modules run, whatever the first one's result.
test-unit: bin/testsum
	@$(GO) test -race -count=1 -run '^$$' $(UNIT_PKGS) > /dev/null || true
	@cd $(BENCH) && $(GO) test -race -count=1 -run '^$$' $(BENCH_UNIT_PKGS) > /dev/null || true
	set -o pipefail; status=0; \
	  $(GO) test -json -race -count=1 $(UNIT_PKGS) | $(TESTSUM) || status=1; \
	  (cd $(BENCH) && $(GO) test -json -race -count=1 $(BENCH_UNIT_PKGS)) | $(TESTSUM) || status=1; \
	  exit $$status

# test-integration runs one package at a time (-p 1): each boots its own
# systemd and measures what a user would see, and two at once on a small
# machine disturb each other's figures. The benchmark module's bench/test
# (the quick benchmark, its report checked) runs after the root's test/.
test-integration: build bin/testsum
	set -o pipefail; status=0; \
	  $(GO) test -json -count=1 -p 1 -timeout 40m ./test/... | $(TESTSUM) || status=1; \
	  (cd $(BENCH) && $(GO) test -json -count=1 -p 1 -timeout 40m ./test/...) | $(TESTSUM) || status=1; \
	  exit $$status

test: deps lint
	@rm -f bin/testsum.json
	@status=0; $(MAKE) --no-print-directory test-unit || status=1; \
	  $(MAKE) --no-print-directory test-integration || status=1; \
	  $(TESTSUM) -total; exit $$status

install: $(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(LIBDIR)/tmpfiles.d $(DESTDIR)$(LIBDIR)/sysusers.d
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/lodis
	for u in $(UNITS); do sed 's|@BINDIR@|$(BINDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u); chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	for t in $(WORKER_TEMPLATES); do install -d $(DESTDIR)$(UNITDIR)/$$t.d; \
	  sed 's|@BINDIR@|$(BINDIR)|g' units/lodis-worker.conf > $(DESTDIR)$(UNITDIR)/$$t.d/10-worker.conf; chmod 0644 $(DESTDIR)$(UNITDIR)/$$t.d/10-worker.conf; done
	sed 's|@BINDIR@|$(BINDIR)|g' units/lodis.tmpfiles > $(DESTDIR)$(LIBDIR)/tmpfiles.d/lodis.conf
	install -m 0644 units/lodis.sysusers $(DESTDIR)$(LIBDIR)/sysusers.d/lodis.conf
	install -d $(DESTDIR)$(POLKITDIR)
	install -m 0644 packaging/polkit/50-lodis.rules $(DESTDIR)$(POLKITDIR)/50-lodis.rules
	install -d $(DESTDIR)$(GENERATORDIR)
	ln -sfr $(DESTDIR)$(BINDIR)/lodis $(DESTDIR)$(GENERATORDIR)/lodis-generator
	install -d $(DESTDIR)$(DATADIR)/lodis/prometheus $(DESTDIR)$(DATADIR)/lodis/grafana
	install -m 0644 packaging/prometheus/lodis.rules.yml $(DESTDIR)$(DATADIR)/lodis/prometheus/lodis.rules.yml
	install -m 0644 packaging/grafana/lodis-dashboard.json $(DESTDIR)$(DATADIR)/lodis/grafana/lodis-dashboard.json
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	  systemd-sysusers lodis.conf && systemd-tmpfiles --create lodis.conf && systemctl daemon-reload; \
	  echo "installed; enable a port with: systemctl enable --now lodis@8080.socket"; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/lodis $(DESTDIR)$(LIBDIR)/tmpfiles.d/lodis.conf $(DESTDIR)$(LIBDIR)/sysusers.d/lodis.conf
	rm -f $(DESTDIR)$(POLKITDIR)/50-lodis.rules $(DESTDIR)$(GENERATORDIR)/lodis-generator
	rm -rf $(DESTDIR)$(DATADIR)/lodis
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	for t in $(WORKER_TEMPLATES); do rm -f $(DESTDIR)$(UNITDIR)/$$t.d/10-worker.conf; rmdir $(DESTDIR)$(UNITDIR)/$$t.d 2>/dev/null || true; done


# deb builds dist/lodis_<version>_<arch>.deb, reproducibly; see packaging/deb/build.sh.
deb:
	@VERSION='$(VERSION)' GO='$(GO)' packaging/deb/build.sh

# nix-vendor-hash prints the NAR hash of `go mod vendor`: what Nix's
# buildGoModule fetches for go.mod/go.sum, nix/package.nix's vendorHash.
nix-vendor-hash:
	@command -v nix >/dev/null || { echo "nix not found: install it with 'apt-get install -y nix-bin'" >&2; exit 1; }
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	  $(GO) mod vendor -o "$$d/vendor" && \
	  nix --extra-experimental-features nix-command hash path --store dummy:// "$$d/vendor"

bin/lodis-machine: $(GO_SOURCES)
	@mkdir -p bin
	$(GO) build -o $@ ./test/cmd/lodis-machine

bin/lodis-bench: $(GO_SOURCES) $(BENCH)/go.mod $(BENCH)/go.sum
	@mkdir -p bin
	cd $(BENCH) && $(GO) build -o ../$@ ./cmd/lodis-bench

# bench boots one throwaway systemd, runs every benchmark stage against lodis
# and its baselines, and writes bench/results/report.md and its SVG plots.
# QUICK=1 runs each stage briefly (under 2 minutes in all).
bench: deps bin/lodis bin/lodis-bench bench-micro
	bin/lodis-bench $(if $(QUICK),--quick) --command 'make bench$(if $(QUICK), QUICK=1)'

# bench-micro: Go benchmarks of the hot paths (activation bookkeeping per
# request and connection, health handler, event ring), with allocations.
bench-micro:
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem $(if $(QUICK),-benchtime 100ms) ./activation ./internal/worker ./supervisor | tee $(BENCH)/results/micro.txt

demo: deps bin/lodis bin/lodis-machine
	bin/lodis-machine demo --ports 8080-8089 --state .demo

demo-stop:
	@if [ -f .demo/pid ]; then kill -TERM $$(cat .demo/pid) && echo "stopping the demo machine"; else echo "no demo running"; fi

clean:
	rm -rf bin dist .demo
