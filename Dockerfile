# One image for every LCM role (docker-compose.yml): gunicorn, Celery worker and beat, the etcd watcher
# and the simulators differ only by command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Static files are collected into the image (whitenoise serves them); the django service collects
# again at start, which is quick when nothing changed. var/ is writable for beat's schedule file, and
# var/metrics for the Prometheus multiprocess files (a volume the four LCM roles share in compose).
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --system --home-dir /app lcm \
    && mkdir -p /app/var/metrics \
    && chown -R lcm /app/var
USER lcm
EXPOSE 8000 8101 8102 8103 8104
CMD ["gunicorn", "lcm.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--no-control-socket"]
