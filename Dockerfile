# syntax=docker/dockerfile:1
#
# Image of the order-process worker.
#
#   docker build -t order-process .
#   docker run --rm order-process --help
#
# Three build stages and a small runtime stage:
#   chef     the Rust toolchain (sea-orm 2 needs rustc >= 1.94; the bookworm image has the gcc
#            that aws-lc-rs, pulled in by sqlx's rustls, needs) plus cargo-chef;
#   planner  reduces the workspace to a "recipe" (manifests + Cargo.lock);
#   builder  builds the dependencies from the recipe alone, in their own layer, so an edit of
#            the sources reuses that layer and only recompiles the three workspace crates;
#   runtime  distroless: glibc, libgcc, CA certificates and nothing else (no shell, no package
#            manager), running as the unprivileged uid 65532.

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# Dependencies only: this layer changes only when Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked -p order-process --recipe-path recipe.json
COPY . .
# The release profile keeps line tables for backtraces; compressing the debug sections keeps
# them readable while shrinking the binary (144 MB -> 54 MB at the time of writing).
RUN cargo build --release --locked -p order-process \
    && mkdir -p /out \
    && objcopy --compress-debug-sections=zlib target/release/order-process /out/order-process

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/order-process /usr/local/bin/order-process
# Numeric, so that Kubernetes' runAsNonRoot can check it (a user name cannot be verified).
USER 65532:65532
ENV ORDER_PROCESS_LOG_FORMAT=json
# Health endpoints (/health/live, /health/ready); ORDER_PROCESS_HTTP_ADDR defaults to 0.0.0.0:8080.
EXPOSE 8080
# Exec form: the binary is PID 1 and receives SIGTERM itself, then drains in-flight deliveries
# for up to ORDER_PROCESS_DRAIN_TIMEOUT. No HEALTHCHECK: Kubernetes probes the endpoints above.
ENTRYPOINT ["/usr/local/bin/order-process"]
CMD ["run"]
