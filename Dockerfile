# picolytics container image: docker build -t picolytics .
# GeoIP: a file named geoip.mmdb at the root of the build context (e.g. from
# `make dbip`) is copied to /app/geoip.mmdb; without one the image has no geography
# until you mount a database there (-v ./geoip.mmdb:/app/geoip.mmdb:ro).

FROM python:3.12.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY sql ./sql
COPY assets ./assets
RUN python -m venv /opt/picolytics \
    && /opt/picolytics/bin/pip install . \
    && /opt/picolytics/bin/picolytics --version

FROM python:3.12.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /app --shell /usr/sbin/nologin picolytics
COPY --from=build /opt/picolytics /opt/picolytics
WORKDIR /app
# LICENSE always matches, so the build works whether or not geoip.mmdb exists.
COPY LICENSE geoip.mmdb* /app/
ENV PATH=/opt/picolytics/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GEO_IP_FILE=/app/geoip.mmdb \
    LISTEN_ADDR=:8080 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["picolytics"]
CMD ["serve"]
