"""Helpers shared by the test suite: free ports and real services started on loopback."""
