# syntax=docker/dockerfile:1
#
# shenguan container image: build with the official Rust image, run on Debian slim as a non-root
# user with a read-only root file system.
#
#   docker build -t shenguan:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 127.0.0.1:8080:8080 -v shenguan-data:/var/lib/shenguan --read-only shenguan:0.1.0
#
# Layout inside the image (every path is in /etc/shenguan/shenguan.toml, from deploy/shenguan.toml):
#   /usr/local/bin/shenguan              the binary (ENTRYPOINT; default command `run`)
#   /etc/shenguan/shenguan.toml          configuration (SHENGUAN_CONFIG)
#   /etc/shenguan/adapters/              adapters shipped in the repository (mount your own over it)
#   /etc/shenguan/catalog/routing.yaml   routing catalog (划转事项清单) — replace with the site's own
#   /etc/shenguan/calendar/              extra holiday years (<year>.toml); 2015–2026 are built in
#   /etc/shenguan/policies/              site deadline profiles; the shipped ones are built in
#   /etc/shenguan/schemas/               canonical schemas (the same as the built-in copies)
#   /var/lib/shenguan                    data: embedded bus and SQLite ledger (a volume)
# No secret is baked in: the ledger URL, Kafka passwords and webhook secrets come from the
# environment at run time (SHENGUAN_LEDGER, SHENGUAN_KAFKA_<PROPERTY>, the catalog's secret_env).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

############################################################################################
# Build stage: rust:1-bookworm brings gcc, make and perl, which rdkafka needs to build
# librdkafka and OpenSSL from source (statically).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only, in their own layer: it is rebuilt when a Cargo.toml or Cargo.lock
#    changes, not when the code does. Empty stand-ins for the two crates' targets (the gateway's
#    lib, bin and benchmark, the core's lib) let cargo build the whole dependency tree (the slow
#    part: librdkafka, OpenSSL, SQLite).
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml ./crates/core/
RUN --mount=type=cache,id=shenguan-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=shenguan-cargo-git,target=/usr/local/cargo/git \
    mkdir -p src benches crates/core/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > benches/pipeline.rs \
 && : > src/lib.rs \
 && : > crates/core/src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src benches crates/core/src \
      target/release/shenguan target/release/shenguan.d \
      target/release/deps/shenguan-* target/release/deps/libshenguan-* \
      target/release/deps/shenguan_core-* target/release/deps/libshenguan_core-* \
      target/release/.fingerprint/shenguan-* target/release/.fingerprint/shenguan-core-*

# 2. The crates. The binary embeds the schemas, the calendar years and the deadline profiles
#    (include_str!) and the console's templates (askama), so those are build input too
#    (tests/deploy checks that every file the sources include is copied here); adapters and the
#    catalog are only runtime data.
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY templates ./templates
COPY schemas ./schemas
COPY calendar ./calendar
COPY policies ./policies
COPY shenguan.example.toml ./
RUN --mount=type=cache,id=shenguan-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=shenguan-cargo-git,target=/usr/local/cargo/git \
    touch src/main.rs src/lib.rs crates/core/src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/shenguan /out/shenguan \
 && strip /out/shenguan \
 && /out/shenguan --version

############################################################################################
# Runtime stage: Debian slim (glibc, as the binary was linked), CA certificates for HTTPS
# webhooks and TLS to Kafka/PostgreSQL, and nothing else — no compiler, no curl.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="shenguan" \
      org.opencontainers.image.description="Data-exchange gateway for 审管联动: legacy approval and supervision systems to one canonical schema on Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shenguan \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/shenguan --no-create-home \
      --shell /usr/sbin/nologin shenguan \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/shenguan

COPY --from=build /out/shenguan /usr/local/bin/shenguan
COPY deploy/healthcheck.sh /usr/local/bin/shenguan-healthcheck
COPY deploy/shenguan.toml /etc/shenguan/shenguan.toml
COPY adapters /etc/shenguan/adapters
COPY catalog /etc/shenguan/catalog
COPY calendar /etc/shenguan/calendar
COPY policies /etc/shenguan/policies
COPY schemas /etc/shenguan/schemas

ENV SHENGUAN_CONFIG=/etc/shenguan/shenguan.toml
# The embedded bus and the SQLite ledger live here; keep it on a volume.
VOLUME ["/var/lib/shenguan"]
WORKDIR /var/lib/shenguan
USER 10001:10001
EXPOSE 8080
# Liveness only (the process serves HTTP). Orchestrators that route traffic should also check
# /readyz (bus reachable), as docker-compose.yml and the Helm chart do.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/shenguan-healthcheck", "/healthz"]
# SIGTERM stops accepting connections and lets in-flight requests finish
# ([server] shutdown_grace_seconds, 30 s by default): give `docker stop` more than that (-t 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shenguan"]
CMD ["run"]
