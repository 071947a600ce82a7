"""EC2's Query wire for the double: the form parameters of a request and the XML of an answer.

Requests are ``application/x-www-form-urlencoded`` forms (``Action=...&InstanceId.1=...``); answers
are XML documents in EC2's namespace. These helpers read the instance IDs a request names, take an
``instance-state-name`` filter out of a DescribeInstances request (the double applies it itself, on
the states it shows), and rewrite instance items in an answer: drop some, change their state, add
a field moto leaves out (``clientToken``, a Spot interruption's state reason). The
namespace is read from each answer's root, so a moto that changes it does not break the double.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from xml.etree import ElementTree

Params = dict[str, list[str]]

_ID_KEY = re.compile(r"^(InstanceId|ResourceId)(\.\d+)?$")
_FILTER_KEY = re.compile(r"^Filter\.(\d+)\.(.+)$")
STATE_FILTER = "instance-state-name"


def parse(body: bytes) -> Params:
    return urllib.parse.parse_qs(body.decode(), keep_blank_values=True)


def encode(params: Params) -> bytes:
    return urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in vs]).encode()


def first(params: Params, key: str, default: str = "") -> str:
    return params.get(key, [default])[0]


def named_instances(params: Params) -> list[str]:
    """Instance IDs the request names (``InstanceId.N``, ``InstanceId``, ``ResourceId.N`` of ``i-``)."""
    ids = [v for k, vs in params.items() if _ID_KEY.match(k) for v in vs if v.startswith("i-")]
    return list(dict.fromkeys(ids))


def take_state_filter(params: Params) -> tuple[Params, set[str] | None]:
    """``params`` without their ``instance-state-name`` filter (renumbered), and its values (or None)."""
    filters: dict[int, dict[str, list[str]]] = {}
    rest: Params = {}
    for key, values in params.items():
        match = _FILTER_KEY.match(key)
        if match:
            filters.setdefault(int(match.group(1)), {})[match.group(2)] = values
        else:
            rest[key] = values
    states: set[str] | None = None
    kept = []
    for number in sorted(filters):
        parts = filters[number]
        if parts.get("Name", [""])[0] == STATE_FILTER:
            states = {v for k, vs in parts.items() if k.startswith("Value") for v in vs}
        else:
            kept.append(parts)
    if states is None:
        return params, None
    for number, parts in enumerate(kept, start=1):
        for sub, values in parts.items():
            rest[f"Filter.{number}.{sub}"] = values
    return rest, states


class Answer:
    """A parsed EC2 answer whose instance items can be dropped or given another state."""

    def __init__(self, payload: bytes) -> None:
        self.root = ElementTree.fromstring(payload)
        self.ns = self.root.tag[1:].split("}")[0] if self.root.tag.startswith("{") else ""

    def q(self, path: str) -> str:
        """``path`` (slash-separated local names) in the answer's namespace."""
        if not self.ns:
            return path
        return "/".join(f"{{{self.ns}}}{part}" for part in path.split("/"))

    def instance_ids(self, set_path: str) -> list[str]:
        return [
            i.findtext(self.q("instanceId")) or "" for i in self.root.iterfind(self.q(set_path + "/item"))
        ]

    def rewrite(
        self,
        set_path: str,
        state_tag: str,
        keep: Callable[[str, str], bool],
        state: Callable[[str, str], str],
        codes: dict[str, int] | None = None,
    ) -> None:
        """For each item of every ``set_path`` list: new state ``state(id, old)``, dropped unless ``keep``.

        ``set_path`` is relative to the root and may pass through other item lists (``reservationSet/
        item/instancesSet``); a reservation left without instances is dropped too.
        """
        parents = list(self.root.iterfind(self.q(set_path)))
        for container in parents:
            for item in list(container.iterfind(self.q("item"))):
                iid = item.findtext(self.q("instanceId")) or ""
                node = item.find(self.q(state_tag))
                old = (node.findtext(self.q("name")) if node is not None else None) or ""
                new = state(iid, old) if old else old
                if node is not None and new != old:
                    name_el, code_el = node.find(self.q("name")), node.find(self.q("code"))
                    if name_el is not None:
                        name_el.text = new
                    if code_el is not None and codes is not None and new in codes:
                        code_el.text = str(codes[new])
                if not keep(iid, new):
                    container.remove(item)
        if "/item/" in set_path:
            outer, _, inner = set_path.rpartition("/item/")
            for holder in self.root.iterfind(self.q(outer)):
                for res in list(holder.iterfind(self.q("item"))):
                    instances = res.find(self.q(inner))
                    if instances is not None and not list(instances):
                        holder.remove(res)

    def set_status(self, item_ids: Iterable[str], set_path: str, check_path: str, value: str) -> None:
        """Set ``check_path`` (e.g. ``instanceStatus/status``) to ``value`` on items of ``item_ids``."""
        wanted = set(item_ids)
        for item in self.root.iterfind(self.q(set_path + "/item")):
            node = item.find(self.q(check_path))
            if item.findtext(self.q("instanceId")) in wanted and node is not None:
                node.text = value

    def set_text(self, set_path: str, tag: str, values: Mapping[str, str]) -> None:
        """Give the items of ``values`` (instance ID -> text) a ``tag`` child with that text."""
        for item in self.root.iterfind(self.q(set_path + "/item")):
            text = values.get(item.findtext(self.q("instanceId")) or "")
            if text is None:
                continue
            node = item.find(self.q(tag))
            if node is None:
                node = ElementTree.SubElement(item, self.q(tag))
            node.text = text

    def dump(self) -> bytes:
        if self.ns:
            ElementTree.register_namespace("", self.ns)
        return bytes(ElementTree.tostring(self.root, encoding="utf-8", xml_declaration=True))


def show_interrupted(doc: Answer, interrupted: set[str], code: str, message: str) -> None:
    """Give the interrupted instances of a DescribeInstances answer the Spot lifecycle and the state
    reason ``code``/``message``."""
    if not interrupted:
        return
    doc.set_text("reservationSet/item/instancesSet", "instanceLifecycle", dict.fromkeys(interrupted, "spot"))
    for item in doc.root.iterfind(doc.q("reservationSet/item/instancesSet/item")):
        if (item.findtext(doc.q("instanceId")) or "") not in interrupted:
            continue
        reason = item.find(doc.q("stateReason"))
        if reason is None:
            reason = ElementTree.SubElement(item, doc.q("stateReason"))
        for tag, text in (("code", code), ("message", message)):
            node = reason.find(doc.q(tag))
            if node is None:
                node = ElementTree.SubElement(reason, doc.q(tag))
            node.text = text
