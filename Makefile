# syncstack: make build | make test | make bench | make demo
SHELL := /bin/bash
GO    ?= go
BIN   := bin
# The build's identity, printed by --version and exported as *_build_info.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# grpcnotrace: no gRPC request tracing (golang.org/x/net/trace and its
# templates: ~0.5 MB of each binary, ~0.4 MB of nerve's RSS). The benchmarks
# build with the same (internal/testserver.ShipTags).
TAGS    := grpcnotrace
LDFLAGS := -X github.com/syncstack/syncstack/internal/version.Version=$(VERSION) -X github.com/syncstack/syncstack/internal/version.Commit=$(COMMIT)

# Debian packages the tests run for real: HAProxy, ZooKeeper (brings a JRE),
# etcd, redis (nerve's redis check), and socat for poking HAProxy's sockets by hand.
# chromium: the fleet page (synctl serve) is tested in a real headless browser;
# zsh: synctl's zsh completion is loaded in a real zsh.
# rabbitmq-server: nerve's rabbitmq check (Airbnb's example config uses it), tested for real.
DEB_PACKAGES := haproxy zookeeper etcd-server socat redis-server chromium zsh rabbitmq-server

.PHONY: all build test unit vet deps deps-demo demo bench scale fuzz clean dist

all: build

# Static binaries (no libc), as make dist ships them: ~1.3 MB less RSS each.
build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# deps installs the Debian packages that are missing (as root, via apt-get).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to apt-get install$$missing" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# Debian starts the packaged daemons; the tests start their own on loopback.
	@for s in zookeeper etcd haproxy rabbitmq-server; do systemctl stop $$s >/dev/null 2>&1 || service $$s stop >/dev/null 2>&1 || true; done
	$(GO) mod download

# demo: the whole system on one host, zero setup (installs haproxy if missing).
deps-demo:
	@dpkg-query -W -f='$${Status}' haproxy 2>/dev/null | grep -q "install ok installed" || { \
		echo "installing haproxy"; \
		if [ "$$(id -u)" != 0 ]; then echo "make demo: need root to apt-get install haproxy" >&2; exit 1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }
	@systemctl stop haproxy >/dev/null 2>&1 || service haproxy stop >/dev/null 2>&1 || true

demo: deps-demo
	@echo "building nerve, synapse, synctl and the demo (a first build fetches modules and takes about a minute)..."
	@CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...
	./$(BIN)/demo

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# test: every test, against real ZooKeeper, etcd and HAProxy on loopback.
test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...
	@# Goroutine stack sizes mean something only without the race detector.
	$(GO) test -count=1 -run 'TestWatchStackStaysSmall' ./registry/...

# bench: the benchmarks against real servers, once each. BENCH_QUICK=1 for
# the short mode.
bench: deps
	SYNCSTACK_BENCH_QUICK=$(BENCH_QUICK) SYNCSTACK_BENCH_JSON=$(CURDIR)/bench/results.json \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/ | tee bench/results.txt

# scale: a fleet of real synapse processes on a 3-node ZooKeeper ensemble
# (plus an observer) and a 3-member etcd cluster, on loopback: fan-out,
# deploy waves, leader kill and full restart, cost per watcher (SCALING.md).
# SYNCSTACK_SCALE_N (synapses, 50), _S (services, 200), _ROUNDS (3), ...:
# see scale/doc.go. Prints a summary; the figures go to scale/results.json.
scale: deps
	SYNCSTACK_SCALE_JSON=$(CURDIR)/scale/results.json \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 90m ./scale/ | tee scale/results.txt

unit:
	$(GO) test -race -count=1 -short ./...

# fuzz: every Fuzz target in the tree, FUZZTIME each (committed corpora
# under testdata/fuzz seed them; a finding becomes a regression test).
FUZZTIME ?= 30s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./third_party/' | sort); do \
		d=./$$(dirname $${f#./}); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$t in $$d for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$d; \
		done; \
	done

# dist: one Debian package per program (nfpm, a Go packager, run at a pinned
# version through the module proxy): binaries, systemd units, example
# configs as conffiles under /etc/syncstack, shell completion for synctl.
# A Debian version must start with a digit: an untagged tree is 0.0.0~git.
NFPM        := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//; s/-/+/; s/-/./g'); \
	[ -n "$$v" ] && echo "$$v" || echo "0.0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || echo 0).$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)")
ARCH        ?= $(shell $(GO) env GOARCH)
DIST        := dist
dist:
	@mkdir -p $(DIST)/bin && rm -f $(DIST)/*.deb
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -trimpath -ldflags "$(LDFLAGS)" -o $(DIST)/bin/ ./cmd/nerve ./cmd/synapse ./cmd/synctl
	$(DIST)/bin/synctl completion bash > $(DIST)/bin/synctl.bash
	$(DIST)/bin/synctl completion zsh > $(DIST)/bin/_synctl
	@for p in nerve synapse synctl; do \
		DEB_VERSION=$(DEB_VERSION) ARCH=$(ARCH) $(NFPM) package --config packaging/nfpm/$$p.yaml --packager deb --target $(DIST)/ || exit 1; \
	done
	@ls -1 $(DIST)/*.deb

clean:
	rm -rf $(BIN) $(DIST)
