# anonid (and the demo storefront in examples/): one image, non-root, dependencies in their own layer.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group anonid
WORKDIR /srv/anonid

# Dependencies first, read from pyproject.toml alone: this layer is rebuilt only when they change,
# not on every edit of the source.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the source. Editable, so the migrations and alembic.ini are found beside the package.
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
COPY examples ./examples
# The storefront's backend uses anonid-client (its dependencies are anonid's too).
COPY clients/python ./clients/python
RUN pip install --no-deps -e . ./clients/python \
    && mkdir -p /srv/anonid/.anonid && chown anonid:anonid /srv/anonid/.anonid

USER anonid
EXPOSE 8000 8001
CMD ["anonid", "serve", "--host", "0.0.0.0", "--port", "8000"]
