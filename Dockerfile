# One image for every polyrecon role; the compose file picks the command.
FROM python:3.11-slim
WORKDIR /srv/polyrecon
COPY pyproject.toml README.md ./
COPY app ./app
COPY polymarket ./polymarket
COPY migrations ./migrations
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["recon"]
