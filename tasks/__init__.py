"""The Celery app of the worker fleet: ``celery -A tasks worker|beat|flower|call`` starts here.

Importing this package builds the app from the fleet configuration (``VKEC2_CONFIG`` and
``VKEC2_*`` overrides, see :mod:`vkec2.config`) and registers every task under its stable,
documented name (``vkec2.pods.create`` ...). Task modules stay thin: lock, one lifecycle step,
record.
"""

import tasks.health
import tasks.maintenance  # noqa: F401  (registers vkec2.maintenance.*)
from tasks import pods as pods
from tasks.app import app

__all__ = ["app"]
