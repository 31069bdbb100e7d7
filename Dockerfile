# rrdp-proxy in a container. Not built on the project's machines (they run no Docker engine);
# see docs/operations.md.
#   docker build -t rrdp-proxy .
#   docker run -p 443:8443 -v rrdp-cache:/var/lib/rrdp-proxy -v ./proxy.toml:/etc/rrdp-proxy/proxy.toml:ro rrdp-proxy
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY patches ./patches
COPY src ./src
# The binary embeds the configuration reference (rrdp-proxy man --section 5).
COPY docs ./docs
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/rrdp-proxy --shell /usr/sbin/nologin rrdp-proxy \
    && mkdir -p /var/lib/rrdp-proxy /etc/rrdp-proxy && chown rrdp-proxy: /var/lib/rrdp-proxy
COPY --from=build /src/target/release/rrdp-proxy /usr/local/bin/rrdp-proxy
USER rrdp-proxy
VOLUME /var/lib/rrdp-proxy
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/rrdp-proxy", "--config", "/etc/rrdp-proxy/proxy.toml"]
