"""The shared state of batched launches: open batches, their members, who sends them, what came back.

Pods whose launches have the same parameters join one batch (:mod:`vkec2.fleet.batchlaunch`), which
one RunInstances launches with ``MaxCount`` = its size. A batch lives in ``launch:b:{id}`` (a hash:
``state``, ``deadline``, ``size``, ``sender`` and ``sent_at``, the reserved ``slot`` of its rate
tokens, EC2's ``code``/``message`` of a refusal, and ``i:{uid}`` = the instance given to a member)
with its members in join order in ``launch:b:{id}:m``; ``launch:open:{key}`` names the batch of
launch parameters ``key`` still accepting members, and ``launch:of:{uid}`` the batch a pod's attempt
joined (``{attempt}|{id}``), so a step that runs twice never joins two batches. A batch goes
``open`` (until its deadline or full) → ``ready`` (members fixed) → ``sending`` (one sender, taken
over when it is silent for longer than a call can take) → ``launched`` (each member's instance
recorded, in one script) or ``refused`` (EC2's capacity answer); a member may leave while its batch
is ``open`` or ``ready``. Each transition is one Lua script, so every worker sees the same batch.
``launch:untagged`` holds the instances whose pod tags are still to be written (instance ID →
the pod's UID and tags): the orphan GC counts them as owned. The scripts build the batch's key
names from the prefix they are given, so they run on one Redis (plain or Sentinel), not a Redis
Cluster.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.commands.core import Script

from vkec2.store.base import StoreBase

#: How long a batch's record is kept after it was opened (its members read their instance from it).
BATCH_TTL_SECONDS = 3600

OPEN, READY, SENDING, LAUNCHED, REFUSED = "open", "ready", "sending", "launched", "refused"

_JOIN = """
local prefix, new_id, window, max_size = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local uid, attempt, ttl, key = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mine = redis.call('GET', KEYS[2])
if mine then
  local sep = string.find(mine, '|', 1, true)
  if sep and string.sub(mine, 1, sep - 1) == attempt then
    local id = string.sub(mine, sep + 1)
    local deadline = redis.call('HGET', prefix .. id, 'deadline')
    if deadline then
      return {id, deadline, '0', tostring(now)}
    end
  end
end
local id = redis.call('GET', KEYS[1])
if id then
  local st = redis.call('HMGET', prefix .. id, 'state', 'deadline', 'size')
  if st[1] ~= 'open' or not st[2] or now >= tonumber(st[2]) or tonumber(st[3]) >= max_size then
    id = false
  end
end
local leader = '0'
if not id then
  id = new_id
  leader = '1'
  redis.call('HSET', prefix .. id, 'state', 'open', 'deadline', tostring(now + window),
             'opened', tostring(now), 'size', '0', 'key', key)
  redis.call('SET', KEYS[1], id, 'PX', math.ceil(window * 1000) + 1000)
end
local batch = prefix .. id
local size = redis.call('HINCRBY', batch, 'size', 1)
redis.call('RPUSH', batch .. ':m', uid)
redis.call('SET', KEYS[2], attempt .. '|' .. id, 'EX', ttl)
if size >= max_size then
  redis.call('HSET', batch, 'state', 'ready')
  if redis.call('GET', KEYS[1]) == id then redis.call('DEL', KEYS[1]) end
end
redis.call('EXPIRE', batch, ttl)
redis.call('EXPIRE', batch .. ':m', ttl)
return {id, redis.call('HGET', batch, 'deadline'), leader, tostring(now)}
"""

_CLAIM = """
local id, sender, stale = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local st = redis.call('HMGET', KEYS[1], 'state', 'deadline', 'sent_at', 'slot', 'key')
local state = st[1]
if not state then return {'gone'} end
if state == 'open' then
  if now < tonumber(st[2]) then return {'open', st[2], tostring(now)} end
  state = 'ready'
  redis.call('HSET', KEYS[1], 'state', 'ready')
  if redis.call('GET', KEYS[3] .. st[5]) == id then redis.call('DEL', KEYS[3] .. st[5]) end
end
if state == 'sending' and now - tonumber(st[3]) < stale then
  return {'sending', st[3], tostring(now)}
end
if state == 'ready' or state == 'sending' then
  redis.call('HSET', KEYS[1], 'state', 'sending', 'sender', sender, 'sent_at', tostring(now))
  local out = {'claimed', st[4] or '', tostring(now)}
  for _, member in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do table.insert(out, member) end
  return out
end
return {state}
"""

_DEFER = """
if redis.call('HGET', KEYS[1], 'state') == 'sending' and redis.call('HGET', KEYS[1], 'sender') == ARGV[1] then
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'slot', ARGV[2]) end
  redis.call('HSET', KEYS[1], 'state', 'ready')
  return 1
end
return 0
"""

_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'sending' and state ~= 'ready' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'code', ARGV[2], 'message', ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'i:' .. ARGV[i], ARGV[i + 1])
end
return 1
"""

_WITHDRAW = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' and state ~= 'ready' then return 0 end
if redis.call('LREM', KEYS[2], 0, ARGV[1]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'size', -1)
end
redis.call('DEL', KEYS[3])
return 1
"""


@dataclass(frozen=True)
class Joined:
    """A pod's place in a batch: its ID, when it closes, whether this pod opened it, Redis's time."""

    batch_id: str
    deadline: float
    leader: bool
    now: float


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to become a batch's sender: ``claimed`` with the members, or its state."""

    state: str
    at: float = 0.0  # the deadline (open), when its sender took it (sending), the slot (claimed)
    now: float = 0.0
    members: tuple[str, ...] = ()

    @property
    def claimed(self) -> bool:
        return self.state == "claimed"


@dataclass(frozen=True)
class BatchView:
    """What one member reads of its batch: the state, its instance (launched), EC2's refusal."""

    state: str
    deadline: float = 0.0
    instance: dict[str, Any] | None = None
    code: str = ""
    message: str = ""
    key: str = ""  # the launch parameters the batch is for


@dataclass(frozen=True)
class PendingTags:
    """The pod tags an instance still needs: whose pod, the tags, since when."""

    uid: str
    tags: dict[str, str]
    since: float


class LaunchBatches(StoreBase):
    """Batches of pods launched by one RunInstances, and the pod tags still to be written."""

    def _script(self, name: str, source: str) -> Script:
        cache: dict[str, Script] = self.__dict__.setdefault("_launch_scripts", {})
        if name not in cache:
            cache[name] = self.redis.register_script(source)
        return cache[name]

    def _batch(self, batch_id: str) -> str:
        return self.keys.launch_batch(batch_id)

    def join_batch(self, params_key: str, uid: str, attempt: int, *, window: float, max_size: int) -> Joined:
        """Join the open batch of ``params_key`` (or open one); the same attempt joins only once."""
        raw = self._script("join", _JOIN)(
            keys=[self.keys.launch_open(params_key), self.keys.launch_member(uid)],
            args=[
                self.keys.launch_batch(""),
                secrets.token_hex(8),
                window,
                max_size,
                uid,
                attempt,
                BATCH_TTL_SECONDS,
                params_key,
            ],
        )
        batch_id, deadline, leader, now = cast(list[str], raw)
        return Joined(batch_id, float(deadline), leader == "1", float(now))

    def claim_batch(self, batch_id: str, sender: str, stale_seconds: float) -> Claim:
        """Become the sender of a batch whose window is over (or whose sender went silent)."""
        batch = self._batch(batch_id)
        raw = cast(
            list[str],
            self._script("claim", _CLAIM)(
                keys=[batch, f"{batch}:m", self.keys.launch_open("")],
                args=[batch_id, sender, stale_seconds],
            ),
        )
        state = raw[0]
        if state == "claimed":
            return Claim(state, float(raw[1] or 0), float(raw[2]), tuple(raw[3:]))
        if state in (OPEN, SENDING):
            return Claim(state, float(raw[1]), float(raw[2]))
        return Claim(state)

    def defer_batch(self, batch_id: str, sender: str, slot: float | None = None) -> bool:
        """Give a claimed batch back unsent (``slot``: when its reserved rate tokens exist)."""
        done = self._script("defer", _DEFER)(
            keys=[self._batch(batch_id)], args=[sender, "" if slot is None else repr(slot)]
        )
        return bool(done)

    def finish_batch(
        self,
        batch_id: str,
        instances: Mapping[str, Mapping[str, Any]],
        *,
        refused: tuple[str, str] | None = None,
    ) -> bool:
        """Record the batch launched (each member's instance, in one script) or refused (code,
        message); False when another sender already did."""
        state, (code, message) = (REFUSED, refused) if refused else (LAUNCHED, ("", ""))
        args: list[str] = [state, code, message]
        for uid, instance in instances.items():
            args += [uid, json.dumps(instance, separators=(",", ":"))]
        return bool(self._script("finish", _FINISH)(keys=[self._batch(batch_id)], args=args))

    def withdraw_from_batch(self, batch_id: str, uid: str) -> bool:
        """Leave a batch not sent yet (a deleted pod); False once it is being sent or was."""
        batch = self._batch(batch_id)
        done = self._script("withdraw", _WITHDRAW)(
            keys=[batch, f"{batch}:m", self.keys.launch_member(uid)], args=[uid]
        )
        return bool(done)

    def batch_view(self, batch_id: str, uid: str) -> BatchView | None:
        """What member ``uid`` reads of its batch; None when Redis has no record of it."""
        state, deadline, instance, code, message, key = cast(
            list[str | None],
            self.redis.hmget(
                self._batch(batch_id), ["state", "deadline", f"i:{uid}", "code", "message", "key"]
            ),
        )
        if state is None:
            return None
        return BatchView(
            state,
            float(deadline or 0),
            json.loads(instance) if instance else None,
            code or "",
            message or "",
            key or "",
        )

    def leave_batches(self, uid: str) -> None:
        """Forget which batch the pod's attempt joined (it joins a new one next, or none)."""
        self.redis.delete(self.keys.launch_member(uid))

    def batch_members(self, batch_id: str) -> list[str]:
        return cast(list[str], self.redis.lrange(f"{self._batch(batch_id)}:m", 0, -1))

    # -- pod tags written after a batched launch -------------------------------------------------

    def want_pod_tags(self, entries: Mapping[str, tuple[str, Mapping[str, str]]], now: float) -> None:
        """Remember instances whose pod tags are still to be written: instance ID -> (UID, tags)."""
        if entries:
            mapping: dict[str | bytes, str | bytes] = {
                iid: json.dumps([uid, dict(tags), now]) for iid, (uid, tags) in entries.items()
            }
            self.redis.hset(self.keys.launch_untagged(), mapping=cast(Any, mapping))

    def pending_pod_tags(self, limit: int = 0) -> dict[str, PendingTags]:
        """The instances whose pod tags are not written yet (``limit``: about that many at most)."""
        key = self.keys.launch_untagged()
        if limit:
            raw = cast(dict[str, str], self.redis.hscan(key, 0, count=limit)[1])
        else:
            raw = cast(dict[str, str], self.redis.hgetall(key))
        out: dict[str, PendingTags] = {}
        for iid, value in raw.items():
            uid, tags, at = json.loads(value)
            out[iid] = PendingTags(str(uid), {str(k): str(v) for k, v in tags.items()}, float(at))
        return out

    def pending_pod_tag(self, instance_id: str) -> PendingTags | None:
        """The pod tags ``instance_id`` still needs, or None."""
        raw = cast(str | None, self.redis.hget(self.keys.launch_untagged(), instance_id))
        if raw is None:
            return None
        uid, tags, at = json.loads(raw)
        return PendingTags(str(uid), {str(k): str(v) for k, v in tags.items()}, float(at))

    def pod_tags_written(self, instance_ids: Iterable[str]) -> None:
        ids = list(instance_ids)
        if ids:
            self.redis.hdel(self.keys.launch_untagged(), *ids)
