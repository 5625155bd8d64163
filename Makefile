# ffmpeg-publisher: `make run` brings up a local RTMP server and the
# publisher; `make test` runs every test. Both install what they need.

GO        ?= go
BIN       := ffmpeg-publisher
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
# System packages: ffmpeg (encoder, and ffprobe for the tests), nginx with
# the RTMP module (the local RTMP server) and the stream module (TLS in
# front of it, for rtmps), curl (a test client), haproxy
# (the load balancer of the multi-instance tests), chromium (the browser
# tests of the recorder page and the status page), prometheus (promtool
# checks the shipped rules, and a real Prometheus scrapes the server);
# nodejs too when no node is on the PATH (the pages' and the sample
# mini-program's JavaScript tests).
DEBS      := ffmpeg nginx libnginx-mod-rtmp libnginx-mod-stream curl haproxy chromium prometheus
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# End-to-end tests stream in real time, in parallel: allow more parallel
# tests than cores, as they mostly wait, but not so many that ffmpeg starts
# (about 0.2 s of CPU each on a small VM) starve the real-time clients: at
# 16 the suite was slower and streams missed their pace.
TESTFLAGS ?= -race -count=1 -parallel 6 -timeout 15m
# The load test in the default run: 20 real-time streams for 10 s (2 cores
# in CI). `make load` runs the full 100 streams for 30 s.
LOAD      ?= LOAD_STREAMS=20 LOAD_SECONDS=10

.PHONY: all build deps run test test-short load hookload bench microbench fuzz vet clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) .

# Installs the Debian packages that are missing (apt-get update first).
deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done; \
		command -v node >/dev/null || echo nodejs); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "system packages present:" $(DEBS); fi

# A local nginx-rtmp on 127.0.0.1:1935 and the publisher on :8081.
run: deps build
	./deploy/run-local.sh ./$(BIN)

test: deps
	$(GO) vet ./...
	node --test web/ examples/wechat-miniprogram/node/
	$(LOAD) $(GO) test $(TESTFLAGS) ./...

load: deps
	LOAD_STREAMS=$${LOAD_STREAMS:-100} LOAD_SECONDS=$${LOAD_SECONDS:-30} $(GO) test -count=1 -run '^TestLoad$$' -v . | grep -E 'resilience_test|^(---|ok|FAIL)'

# What a 50 ms on_publish hook adds to 100 streams going live (about two
# minutes); the numbers go in BENCHMARKS.md.
hookload: deps
	HOOK_LOAD=1 $(GO) test -count=1 -run '^TestHookLoad$$' -v . | grep -E 'hooks_test|^(---|ok|FAIL)'

# The end-to-end benchmark against nginx-rtmp and bare ffmpeg (about 40
# minutes on 2 cores; keep the machine otherwise idle): writes
# bench/REPORT.md and bench/curve.png. BENCH='-sections latency' and the
# other flags of `go run ./bench -h` pick parts.
BENCH ?=
bench: deps build
	$(GO) run ./bench -out bench/REPORT.md -png bench/curve.png $(BENCH)

# The hot paths, with allocations.
microbench:
	$(GO) test -run '^$$' -bench . -benchmem ./session ./transport ./internal/rtmpplay

# The quick loop: fake ffmpeg only, no real-time streams.
test-short:
	$(GO) test -short -count=1 ./...

# Runs each fuzzer for FUZZTIME; crashers land in testdata/fuzz and are
# replayed by every plain test run.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./session -run '^$$' -fuzz FuzzScanner -fuzztime $(FUZZTIME)
	$(GO) test ./transport -run '^$$' -fuzz FuzzBase64Reader -fuzztime $(FUZZTIME)
	$(GO) test ./session -run '^$$' -fuzz FuzzValidID -fuzztime $(FUZZTIME)
	$(GO) test ./session -run '^$$' -fuzz FuzzWebMScanner -fuzztime $(FUZZTIME)
	$(GO) test ./session -run '^$$' -fuzz FuzzADTSScanner -fuzztime $(FUZZTIME)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

clean:
	rm -rf $(BIN) .run
