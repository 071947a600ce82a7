"""Deployment artefacts: the Helm chart (helm/vkec2) and the docker compose stack (compose/)."""
