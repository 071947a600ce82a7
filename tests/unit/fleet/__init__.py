"""The fleet's rules on in-memory fakes: one test per row of the transition table, and the health sweep.

Everything here runs on ``tests/support/fakes.py`` (no Redis, moto, gRPC or sleeps), so the whole
package takes well under ten seconds; the end-to-end tests in ``tests/fleet`` and
``tests/maintenance`` cover the same rules against the real adapters.
"""
