# The stock Apache DataFusion Ballista scheduler and executor, release 55 (the one that matches
# KubeStep's DataFusion), built from crates.io. Nothing of KubeStep's goes in: the analyses are
# plain SQL that these binaries run as they are.
#
#   docker build -f deploy/ballista.Dockerfile -t registry.example.com/ballista:55.0.0 deploy
FROM rust:1-bookworm AS build
RUN cargo install --locked ballista-scheduler@55.0.0 ballista-executor@55.0.0 --root /opt/ballista

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/ballista/bin/ballista-scheduler /opt/ballista/bin/ballista-executor /usr/local/bin/
USER 65532:65532
