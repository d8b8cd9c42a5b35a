# syntax=docker/dockerfile:1
# Build: docker build -t cluster-state-service .
# Run:   docker run -p 3000:3000 cluster-state-service --simulate

FROM rust:1-bookworm AS build
# protoc: the etcd client's build generates its gRPC code with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cluster-state-service \
 && strip target/release/cluster-state-service

FROM debian:bookworm-slim
# ca-certificates for the AWS endpoints; curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/css --create-home css
COPY --from=build /src/target/release/cluster-state-service /usr/local/bin/cluster-state-service
USER 10001:10001
WORKDIR /var/lib/css
ENV CSS_SERVER__BIND=0.0.0.0:3000 \
    CSS_STORE__DATA_DIR=/var/lib/css/data
VOLUME ["/var/lib/css/data"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:3000/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/cluster-state-service"]
