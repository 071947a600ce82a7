"""The Kubernetes API server test double (``apiserver.py``) and the tests that keep it honest."""
