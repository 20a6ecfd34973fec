# The engine's image: the locked dependencies (requirements/base.lock), the package, a non-root
# user, `agent-engine serve` by default. The same image runs `worker` and `router serve`
# (deploy/compose.yaml). docs/deploy.md.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/agent-engine
WORKDIR /build
# The locked set first: this layer is rebuilt only when the lock changes.
COPY requirements/base.lock requirements/base.lock
RUN /opt/agent-engine/bin/pip install --requirement requirements/base.lock
COPY pyproject.toml README.md ./
COPY src ./src
# --no-deps: every dependency is already installed at its locked version.
RUN /opt/agent-engine/bin/pip install --no-deps .

FROM python:3.11-slim
# bubblewrap sandboxes run_command (docs/sandbox.md); git for steps that read a repository.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends bubblewrap git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home \
        --home-dir /var/lib/agent-engine agent-engine \
    && mkdir /workspaces && chown agent-engine:agent-engine /workspaces
COPY --from=build /opt/agent-engine /opt/agent-engine
ENV PATH=/opt/agent-engine/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGENT_ENGINE_HOST=0.0.0.0 \
    AGENT_ENGINE_PORT=8000 \
    AGENT_ENGINE_LOG_FORMAT=json \
    AGENT_ENGINE_WORKSPACE_ROOTS=/workspaces
USER agent-engine
WORKDIR /var/lib/agent-engine
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["agent-engine"]
CMD ["serve"]
