# mcp-gateway: a small, non-root image serving MCP over streamable HTTP on port 8000.
# It runs against a NATS (JetStream) and a PostgreSQL of your own (MCPGW_NATS_URL, MCPGW_DATABASE_URL): it has
# no embedded servers (the `embedded` extra is left out). Tool files are read from /etc/mcp-gateway/tools
# (mount yours there); `mcp-gateway worker` in the same image runs the example workers (see compose.yaml).
ARG PYTHON=python:3.11.11-slim-bookworm

FROM ${PYTHON} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY mcp_gateway ./mcp_gateway
COPY migrations ./migrations
COPY config ./config
# pip builds the wheels of both distributions (the gateway and, from worker/, its worker SDK) and installs them.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && /opt/venv/bin/pip check

FROM ${PYTHON}
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin mcpgw \
    && mkdir -p /etc/mcp-gateway/tools
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCPGW_HOST=0.0.0.0 \
    MCPGW_PORT=8000 \
    MCPGW_TOOLS_DIR=/etc/mcp-gateway/tools \
    MCPGW_DATA_DIR=/tmp/mcpgw
USER mcpgw
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"]
ENTRYPOINT ["mcp-gateway"]
CMD ["serve", "--transport", "http"]
