"""Secrets stay secret: the one helper that hides credentials in text and in configuration dumps.

:func:`redact` masks, in any text, the password of every URL (``redis://:pw@``,
``rediss://user:pw@``, ``sentinel://:pw@…``, ``https://user:pw@``), secret query parameters
(``?password=``, ``token=``, …), bearer tokens and the body of PEM private keys. It is applied to
every log line the fleet's log handler writes (:mod:`vkec2.observability.logs`), to configuration
error messages (:mod:`vkec2.config.errors`) and to what the ``vkec2`` command prints.
:func:`redact_config` is for printing a configuration: values under secret-looking keys
(passwords, tokens, secrets, Flower's ``basic_auth`` pairs) are replaced by ``***`` and every
other string goes through :func:`redact`. Written by hand because it is a few regular
expressions: the logging libraries we use have no redaction of their own, and Celery's and
kombu's masking (``maybe_sanitize_url``) covers only their own banner and connection messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What a hidden secret is shown as.
MASK = "***"

# ://[user]:PASSWORD@ — whatever the scheme (even none) and the user (even with spaces); the password
# runs to the last '@' before a '/', a quote or the end of the line, so one holding '@', ';' or a
# space is hidden whole (text after it on the line may be hidden too: better too much than too little).
_URL_PASSWORD = re.compile(r"(://[^:/@;'\"\n]{0,128}:)[^/'\"\n]+@")
# The same within one space-free token, across a '/' (a password that was not percent-encoded).
_URL_PASSWORD_TOKEN = re.compile(r"(://[^:/@;'\"\s]{0,128}:)[^\s'\"]+@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|pass|token|access_token|secret|api_key|apikey|auth)=)[^&#\s'\"]+"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+")
_PEM_KEY = re.compile(r"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----).*?(-----END \2PRIVATE KEY-----)", re.DOTALL)
# An unterminated key block (a message cut short) is hidden to the end of the text.
_PEM_KEY_OPEN = re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(?!\*\*\*-----END).*", re.DOTALL)

#: Key names (lower case, split on '_' and '-') whose values are secrets.
_SECRET_WORDS = frozenset({"password", "passwd", "secret", "token", "credential", "credentials", "apikey"})
_SECRET_NAMES = frozenset({"basic_auth", "api_key", "private_key", "auth_token"})
#: Keys naming where a secret is, not the secret itself.
_NOT_SECRET_SUFFIXES = ("_file", "_files", "_path", "_dir", "_seconds", "_env", "_name", "_ref")


def redact(text: str) -> str:
    """``text`` with URL passwords, secret query parameters, bearer tokens and PEM keys hidden."""
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        text = _URL_PASSWORD_TOKEN.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(rf"\1{MASK}", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\1{MASK}", text)
    if "PRIVATE KEY-----" in text:
        text = _PEM_KEY.sub(rf"\1{MASK}\3", text)
        text = _PEM_KEY_OPEN.sub(rf"\1{MASK}", text)
    return text


def is_secret_key(name: str) -> bool:
    """True when a configuration key's value is a secret (``password``, ``bootstrap_token``, …)."""
    lowered = name.lower().replace("-", "_")
    if lowered.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return lowered in _SECRET_NAMES or any(word in _SECRET_WORDS for word in lowered.split("_"))


def _masked(key: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_masked(key, item) for item in value]
    if key == "basic_auth" and isinstance(value, str) and ":" in value:
        return f"{value.partition(':')[0]}:{MASK}"  # Flower's user:password pairs keep the user
    return MASK


def redact_config(data: Any) -> Any:
    """A copy of a configuration (mappings, lists, scalars) fit to print: secrets hidden."""
    if isinstance(data, Mapping):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            secret = isinstance(key, str) and is_secret_key(key) and value not in (None, "", [], {})
            out[key] = _masked(key, value) if secret else redact_config(value)
        return out
    if isinstance(data, list | tuple):
        return [redact_config(item) for item in data]
    if isinstance(data, str):
        return redact(data)
    return data
