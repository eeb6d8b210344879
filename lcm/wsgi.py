"""WSGI entry point (`gunicorn lcm.wsgi`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lcm.settings")

application = get_wsgi_application()
