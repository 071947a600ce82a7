"""How the fleet talks to its agents: mTLS, or plaintext only where nothing leaves the machine.

An agent runs its workload as root on an instance with an instance role, so whoever can drive it
owns the instance; plaintext gRPC lets anyone on the path do so. :func:`plaintext_agents_problem`
is the one rule, applied by :func:`vkec2.config.load_config` to every configuration a process or
``vkec2 config check`` loads: without ``agent.tls`` the fleet is refused unless its agents are on
loopback (``agent.endpoint: static:127.0.0.1:PORT``, ``[::1]`` or ``localhost``: the local fleet of
``vkec2 up`` and the tests) or the operator names ``agent.insecure_plaintext: true``, which is
logged as a warning at every start. Models built in code (``Settings()``) are not checked: the rule
is about deployed configurations, like Flower's ``flower.local``.
"""

from __future__ import annotations

import ipaddress

from vkec2.config.model import AgentConnection

INSECURE_KEY = "agent.insecure_plaintext"

REFUSAL = (
    "not set, so workers and the producer would drive agents in plaintext over the network; "
    "set agent.tls (the fleet CA, docs/agent.md; the Helm chart sets it) or, for a fleet whose "
    f"agents nobody else can reach, {INSECURE_KEY}: true"
)
CONTRADICTION = "true, but agent.tls is set too; remove one of them"
WARNING = (
    f"{INSECURE_KEY} is true: workers and the producer drive agents in PLAINTEXT and agents run "
    "--insecure; anyone who reaches an agent's port can run commands as root on its instance"
)


def on_loopback(agent: AgentConnection) -> bool:
    """True when every agent is reached on this machine's loopback (a ``static:`` endpoint)."""
    static = agent.static_endpoint()
    if static is None:
        return False
    host = static[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_agents_problem(agent: AgentConnection) -> tuple[str, str] | None:
    """``(key, problem)`` when ``agent`` would be driven in plaintext without leave, else None."""
    if agent.tls is not None:
        return ("agent.insecure_plaintext", CONTRADICTION) if agent.insecure_plaintext else None
    if agent.insecure_plaintext or on_loopback(agent):
        return None
    return "agent.tls", REFUSAL


def plaintext_agents_warning(agent: AgentConnection) -> str | None:
    """The warning to log when the operator allowed plaintext agents off loopback."""
    if agent.insecure_plaintext and agent.tls is None and not on_loopback(agent):
        return WARNING
    return None
