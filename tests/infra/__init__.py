"""Tests of `vkec2 infra`: the AWS prerequisites planned, applied and destroyed against moto."""
