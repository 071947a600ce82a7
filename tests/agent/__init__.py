"""Tests of the agent, its simulator, the fleet CA and the fleet's agent client (real gRPC on loopback)."""
