# mcp-gateway: a small, non-root image serving MCP over streamable HTTP on port 8000.
# It expects MCPGW_NATS_URL and MCPGW_DATABASE_URL (compose.yaml runs both); it starts no embedded servers then.
FROM python:3.11-slim AS build
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mcp_gateway ./mcp_gateway
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/venv/bin/pip install --no-cache-dir -e .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin mcpgw
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root pyproject.toml README.md ./
COPY --chown=root:root mcp_gateway ./mcp_gateway
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root config ./config
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MCPGW_HOST=0.0.0.0 \
    MCPGW_PORT=8000 \
    MCPGW_DATA_DIR=/tmp/mcpgw
USER mcpgw
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
ENTRYPOINT ["mcp-gateway", "--config", "/app/config/gateway.yaml"]
CMD ["serve", "--transport", "http"]
