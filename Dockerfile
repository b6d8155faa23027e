# Tollgate's image: built in one stage, run from a slim one holding only the installed
# package and its runtime dependencies, as a non-root user.
#
#   docker build -t tollgate .
#   docker run -p 8080:8080 -p 9464:9464 -v "$PWD/config/tollgate.yaml:/etc/tollgate/tollgate.yaml:ro" \
#     -e TOLLGATE_UPSTREAM__API_KEY=sk-... tollgate
#
# The base is pinned to an exact Python release; bump both stages together.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# Runtime dependencies only (no [dev] extra); pip and setuptools leave the environment after.
RUN python -m venv /opt/tollgate \
    && /opt/tollgate/bin/pip install --no-compile . \
    && /opt/tollgate/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/tollgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOLLGATE_HOST=0.0.0.0 \
    TOLLGATE_PORT=8080 \
    TOLLGATE_METRICS__PORT=9464 \
    TOLLGATE_DATA_FILE=/var/lib/tollgate/keys.json
RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --no-create-home --shell /usr/sbin/nologin tollgate \
    && mkdir -p /var/lib/tollgate /etc/tollgate \
    && chown tollgate:tollgate /var/lib/tollgate
COPY --from=build /opt/tollgate /opt/tollgate
USER 10001:10001
WORKDIR /var/lib/tollgate
EXPOSE 8080 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['TOLLGATE_PORT'] + '/healthz', timeout=2)"]
ENTRYPOINT ["tollgate"]
CMD ["serve"]
