# shoal — build, test and run. `make help` lists the targets.
GO       ?= go
BIN      := bin
# Static binaries: shoal-init runs inside containers whose rootfs has no libc,
# and static daemons do not care which Debian they land on.
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath
TESTFLAGS ?= -count=1 -timeout 30m

CMDS := shoal:./cmd/shoal shoal-manager:./cmd/manager shoal-agent:./cmd/agent shoal-init:./cmd/init

.PHONY: help build test bench proto lint demo clean deps

help:
	@echo "make build   build bin/shoal* (static)"
	@echo "make test    install test dependencies if missing, run every test (root needed)"
	@echo "make bench   run the benchmarks under bench/ (installs runc for the comparison)"
	@echo "make lint    gofmt and go vet"
	@echo "make proto   regenerate proto/ (installs protoc and plugins if missing)"
	@echo "make demo    run the demo"
	@echo "make clean   remove build output"

# Build every command that exists so far.
build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do name=$${c%%:*}; dir=$${c#*:}; \
	  if [ -d $$dir ]; then echo "build $(BIN)/$$name"; $(GOBUILD) -o $(BIN)/$$name $$dir || exit 1; fi; done

# Packages the tests need on a fresh Debian machine. Root is needed to
# install them and to run the tests (namespaces, cgroups, mounts).
deps:
	@need=""; \
	command -v ip >/dev/null || need="$$need iproute2"; \
	command -v nft >/dev/null || need="$$need nftables"; \
	command -v curl >/dev/null || need="$$need curl"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; \
	fi

test: deps
	$(GO) test $(TESTFLAGS) ./...

bench: deps build
	@command -v runc >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc)
	$(GO) run ./bench/runtime -shoal-init $(BIN)/shoal-init
	$(GO) run ./bench/swarm -bin $(BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOBIN := $(shell $(GO) env GOPATH)/bin

proto:
	@command -v protoc >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler)
	@test -x $(GOBIN)/protoc-gen-go || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(GOBIN)/protoc-gen-go-grpc || $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@files=$$(find proto -name '*.proto' 2>/dev/null); \
	if [ -z "$$files" ]; then echo "no .proto files yet"; exit 0; fi; \
	PATH=$(GOBIN):$$PATH protoc -I proto --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative $$files

demo: deps build
	./scripts/demo.sh

clean:
	rm -rf $(BIN)
