# syntax=docker/dockerfile:1
# Rerank Gateway image. Stage 1 builds wheels for the project, its runtime dependencies and
# every optional extra ([all]: Bedrock, OCI, Vertex, ONNX; not [dev]); stage 2 installs nothing but those
# into a slim Python and runs as a non-root user, listening on all addresses (--host 0.0.0.0
# overrides server.host, so a config written for 127.0.0.1 works in the container).
# Build: docker build -t rerank-gateway:0.1.0 .
# Run:   docker run -p 8080:8080 -v $PWD/config.yaml:/etc/rerank-gateway/config.yaml:ro \
#          -e COHERE_API_KEY rerank-gateway:0.1.0
# (auth.mode none is refused off loopback: the container's config needs team keys.)

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md is optional (pyproject names it; the wildcard tolerates its absence).
COPY pyproject.toml README.md* ./
COPY gateway/ gateway/
COPY providers/ providers/
COPY policies/ policies/
RUN pip wheel --wheel-dir /wheels '.[all]' \
 && pip install --no-index --find-links /wheels --prefix /install 'rerank-gateway[all]'

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway
COPY --from=builder /install /usr/local
# Numeric so Kubernetes' runAsNonRoot can verify it; matches the chart's runAsUser.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["rerank-gateway"]
CMD ["serve", "--config", "/etc/rerank-gateway/config.yaml", "--host", "0.0.0.0"]
