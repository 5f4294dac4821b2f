# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/hub
COPY pyproject.toml README.md ./
COPY hub ./hub
RUN /opt/hub/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home hub
COPY --from=build /opt/hub /opt/hub
ENV PATH=/opt/hub/bin:$PATH PYTHONUNBUFFERED=1
USER hub
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["hub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
