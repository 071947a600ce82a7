"""The workers' Celery app, built from the fleet configuration when ``tasks`` is imported.

``celery -A tasks ...`` loads the configuration (``VKEC2_CONFIG`` plus ``VKEC2_*`` overrides) here;
the settings themselves live in :mod:`vkec2.broker.app`, which the producer and the CLI use to publish
without importing the tasks.
"""

from __future__ import annotations

from vkec2.broker.app import make_app
from vkec2.config import load_settings

app = make_app(load_settings())
