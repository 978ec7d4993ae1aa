# The monitor image: `docker build -t invmon .`, used by docker-compose.yml for
# both the monitor and the simulator.

# The Go line of go.mod; GOTOOLCHAIN fetches a newer patch release if go.mod asks for one.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binary (no cgo): the runtime image has no libc. VERSION and REVISION
# (docker build --build-arg VERSION=$(git describe --always) --build-arg
# REVISION=$(git rev-parse HEAD)) become `monitor --version` and
# invmon_build_info; .git is not in the build context.
ARG VERSION=devel
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w \
      -X github.com/prometheus/common/version.Version=${VERSION} \
      -X github.com/prometheus/common/version.Revision=${REVISION}" -o /monitor ./cmd/monitor \
    && mkdir -p /state

# distroless: no shell or package manager to patch, runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /monitor /usr/local/bin/monitor
COPY rules/ /etc/invmon/rules/
COPY deploy/monitor.yaml /etc/invmon/monitor.yaml
# The state directory must exist and belong to the nonroot user before a volume
# is mounted on it, and distroless has no mkdir to make it at run time.
COPY --from=build --chown=65532:65532 /state /var/lib/invmon
VOLUME /var/lib/invmon
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/monitor"]
CMD ["run", "--config", "/etc/invmon/monitor.yaml"]
