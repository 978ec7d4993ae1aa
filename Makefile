# invmon: one entry point for people and CI. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go

.PHONY: test deps vet demo bench bench-state dev-up dev-down build slo-rules k8s-manifests

# The binary with its version and revision (monitor --version, invmon_build_info).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
build:
	$(GO) build -ldflags "-X github.com/prometheus/common/version.Version=$(VERSION) -X github.com/prometheus/common/version.Revision=$(REVISION)" -o monitor ./cmd/monitor

# Installs what is missing (Kafka jars, Alertmanager, kcat, docker-compose),
# checks the compose file and the build, then runs every test, including the
# integration tests against a real Kafka broker and a real Alertmanager.
test: deps
	docker-compose -f docker-compose.yml config -q
	$(GO) run ./cmd/monitor slo rules --rule-files 'rules/*.yaml' | diff -u deploy/prometheus/slo.rules.yml - \
		|| { echo "deploy/prometheus/slo.rules.yml is stale: run make slo-rules and commit it"; exit 1; }
	promtool check rules deploy/prometheus/rules.yml deploy/prometheus/slo.rules.yml
	promtool test rules deploy/prometheus/slo.rules.test.yml
	amtool check-config deploy/alertmanager/alertmanager.yml
	$(GO) vet ./...
	$(GO) build ./...
	$(GO) test -count=1 -timeout 25m ./...

# The consistency-SLO recording rules and burn-rate alerts, generated from
# the objectives in rules/; `make test` fails when the committed copy differs.
slo-rules:
	$(GO) run ./cmd/monitor slo rules --rule-files 'rules/*.yaml' --out deploy/prometheus/slo.rules.yml
	$(MAKE) k8s-manifests

# deploy/kubernetes's PrometheusRule and rules ConfigMap, generated from
# deploy/prometheus/*.yml and rules/*.yaml: run after changing either.
k8s-manifests:
	$(GO) test -count=1 ./internal/deploycheck -run Generated -update

deps:
	bash scripts/deps.sh

demo:
	$(GO) run ./cmd/monitor demo

# Produces the example domain (about 1M events over the five topics) to a real
# broker (the dev stack's, or KAFKA_BROKERS) and runs the monitor with each
# example rule alone and all five together, printing each run's rate beside a
# bare consumer's, their ratio, peak RSS, live state and the verdict.
# BENCH_FLAGS sizes it, e.g. BENCH_FLAGS="--events 200000 --restore-entries 0".
bench: deps
	@brokers="$${KAFKA_BROKERS:-}"; \
	if [ -z "$$brokers" ]; then bash scripts/devstack.sh up >/dev/null && brokers=$$(cat .devstack/brokers); fi; \
	$(GO) build -o .devstack/monitor ./cmd/monitor && .devstack/monitor bench --brokers "$$brokers" $(BENCH_FLAGS)

# The state benchmark: the engine over Badger in process (no broker), keys that
# stay live; EVENTS=10000000 for the full scale.
bench-state:
	$(GO) run ./cmd/monitor bench --state --events $${EVENTS:-10000000}

dev-up: deps
	bash scripts/devstack.sh up

dev-down:
	bash scripts/devstack.sh down
