"""Tests of vkec2: unit, integration and end-to-end, against real Redis, moto, gRPC and Celery."""
