"""What type a settings path has: the annotations behind env-var parsing and error messages.

The environment loader (:mod:`vkec2.config.loading`) must know whether ``VKEC2_A__B`` names a list,
a section or an optional value before pydantic sees it, and the error formatter
(:mod:`vkec2.config.errors`) names the section a bad key sits in; both walk :class:`Settings`'s
annotations with :func:`annotation_at` and unwrap ``X | None`` with :func:`strip_optional`.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from vkec2.config.model import Settings

#: :func:`annotation_at` of a path that names no setting.
UNKNOWN: Any = object()


def strip_optional(tp: Any) -> Any:
    """``X`` for ``X | None``, else ``tp``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def is_optional(tp: Any) -> bool:
    """True for ``X | None``."""
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def is_structured(tp: Any) -> bool:
    """True for a list, a mapping or a section (given as JSON in an environment variable)."""
    bare = strip_optional(tp)
    return get_origin(bare) in (list, dict) or (isinstance(bare, type) and issubclass(bare, BaseModel))


def annotation_at(path: Sequence[str | int]) -> Any:
    """The annotation of the key at ``path`` (list indices as ints) in :class:`Settings`, or UNKNOWN."""
    tp: Any = Settings
    for part in path:
        tp = strip_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return UNKNOWN
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return UNKNOWN
    return tp
