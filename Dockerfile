# Dockerfile for Tidemark: builds the single `tidemark` binary and ships it in a slim runtime image (role chosen by the command: ingest|aggregator|alerter|api|standalone|migrate).
#
# Build:  docker build -t tidemark:local .        (or `docker compose build`)
# Run:    docker run --rm tidemark:local --help
#
# BuildKit is required (default in Docker >= 23 and in `docker compose`; its built-in
# Dockerfile frontend supports RUN --mount, so no `# syntax=` directive is needed): the build uses
# cache mounts for Cargo's registry and the target directory, which is the dependency
# cache — a source change recompiles only the workspace crates, not the ~300 dependencies
# or librdkafka. (A stub-manifest "deps only" layer is not used: it would have to list
# every workspace member by hand and break whenever one is added.)

############################
# Build stage
############################
FROM rust:1-bookworm AS build

# librdkafka is compiled from source by rdkafka-sys (its ./configure + make, no cmake);
# it needs a C/C++ toolchain, python3 (used by librdkafka's build scripts) and zlib headers
# (the workspace enables rdkafka's `libz` feature). Package versions follow the pinned
# Debian release (bookworm), so they are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# sqlx query macros (if any) must compile without a live database: they use the
# checked-in `.sqlx/` metadata. Migrations (`sqlx::migrate!`) are embedded from the sources.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

COPY . .

# The target dir is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,id=tidemark-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=tidemark-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=tidemark-target,target=/src/target \
    cargo build --release --locked --bin tidemark \
 && install -D -m 0755 target/release/tidemark /out/tidemark

############################
# Runtime stage
############################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to external webhooks / managed services. librdkafka is linked
# statically; zlib1g and libc are part of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged user with a fixed uid/gid so volume permissions are predictable; USER is
# numeric so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 tidemark \
 && useradd --system --uid 10001 --gid tidemark --home-dir /var/lib/tidemark \
      --create-home --shell /usr/sbin/nologin tidemark

COPY --from=build /out/tidemark /usr/local/bin/tidemark

# Inside a container every role must listen on all interfaces (the binary's own
# defaults are 127.0.0.1:*). Compose sets these explicitly as well.
ENV TIDEMARK_INGEST_ADDR=0.0.0.0:8080 \
    TIDEMARK_API_ADDR=0.0.0.0:8081 \
    TIDEMARK_AGGREGATOR_ADDR=0.0.0.0:8082 \
    TIDEMARK_ALERTER_ADDR=0.0.0.0:8083

# 8080 ingest (POST /v1/samples), 8081 api, 8082 aggregator ops, 8083 alerter ops;
# every role serves /metrics, /livez and /readyz on its own port.
EXPOSE 8080 8081 8082 8083

USER 10001:10001
WORKDIR /var/lib/tidemark

# No HEALTHCHECK here: the slim image has no curl/wget and the port to probe depends on
# the role the container runs. Probe GET /livez (liveness) and /readyz (readiness) from
# the orchestrator instead (Kubernetes httpGet probes, or a compose healthcheck per role).

ENTRYPOINT ["tidemark"]
CMD ["--help"]
