# Build: docker build -t cluster-state-service .
# Run:   docker run -p 3000:3000 cluster-state-service --simulate
# The base images are build arguments with the public defaults, so a machine
# without a registry can use local ones:
#   docker build --build-arg RUST_IMAGE=my-rust --build-arg RUNTIME_IMAGE=my-debian .
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# What the build needs beyond Rust (protoc and its include files) is what
# scripts/setup --build-only checks for and installs: one list, not two.
COPY scripts/setup scripts/setup
RUN scripts/setup --build-only && rm -rf /var/lib/apt/lists/*
# The dependencies first, built against placeholder sources in a layer of
# their own: it is built again only when Cargo.lock or a manifest changes.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/
COPY bench/Cargo.toml bench/
RUN mkdir -p src tests/it actors/src bench/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && touch src/lib.rs tests/it/main.rs actors/src/lib.rs bench/src/lib.rs \
 && cargo build --release --locked --bin cluster-state-service \
 && rm -rf src tests actors/src bench/src
COPY . .
# COPY keeps the files' times, which can be older than the placeholders' build.
RUN find src actors/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin cluster-state-service \
 && strip target/release/cluster-state-service

FROM ${RUNTIME_IMAGE}
# ca-certificates for the AWS endpoints; curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/css --create-home css \
 && install -d -o 10001 -g 10001 /var/lib/css/data
COPY --from=build /src/target/release/cluster-state-service /usr/local/bin/cluster-state-service
USER 10001:10001
WORKDIR /var/lib/css
ENV CSS_SERVER__BIND=0.0.0.0:3000 \
    CSS_STORE__DATA_DIR=/var/lib/css/data
# Made above, owned by the service's user: a new volume takes its owner.
VOLUME ["/var/lib/css/data"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/cluster-state-service"]
