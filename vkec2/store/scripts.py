"""Every Lua script vkec2 runs on Redis, in one place, with the keys and arguments each expects.

The store's atomic operations are Lua scripts so that a read, a check and a write happen as one step
on the server: the per-pod lock that hands out a fencing token, the fenced compare-and-set of a pod
record together with its outbox event, the producer's desired-state and delete writes, the due
times of pod steps in flight (set, moved, cleared and claimed with the writes they belong to), the
warm-pool claim, the guard a lock holder runs before each side effect, and the fleet-wide EC2 token bucket.
Each constant documents its ``KEYS`` and ``ARGV`` and what it returns; :class:`Scripts` registers
them all on one client (redis-py sends a script's body only when the server does not know its SHA
yet). Only the store modules use them.
The Dedicated-host slot claim, its release and the allocation in flight are here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

# KEYS: lock, pod.  ARGV: token, ttl_ms.  -> fence, 0 when busy, -1 when the pod is unknown.
ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return redis.call('HINCRBY', KEYS[2], 'fence', 1)
"""

# KEYS: lock, pod.  ARGV: token, ttl_ms.  -> {fence, field, value, ...} (the record as HGETALL after
# the fence was taken), {0} when busy, {-1} when the pod is unknown. A step's lock and its fresh
# record in one round trip.
ACQUIRE_READ = """
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1} end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local fence = redis.call('HINCRBY', KEYS[2], 'fence', 1)
local out = redis.call('HGETALL', KEYS[2])
table.insert(out, 1, fence)
return out
"""

# KEYS: pod, outbox, due, due_task, lock.
# ARGV: token, fence, uid, mode, when, due step JSON, task, nfields, field, value, ..., nevents, then
# per event its npairs and field, value pairs, then the outbox's maxlen.
# -> {written: 1, 0 when the fence is stale, -1 when the pod is unknown; then for mode 'finish' 1
# when the chain's due step was cleared}. The end of a step's fenced writes in one round trip: the
# fields and events a step wrote since its last side effect, then per mode: 'guard' extends the
# lock to ``when`` ms (before a side effect; written 0 when the lock is lost), 'next' makes the pod
# due the chain's next step at ``when``, 'finish' clears the due step of ``task`` (as FINISH_CHAIN:
# even for an unknown pod when nothing was to be written), 'release' writes only; every mode but
# 'guard' then releases the lock (the step is over).
STEP_END = """
local current = redis.call('HGET', KEYS[1], 'fence')
local written = 1
if not current then written = -1 elseif current ~= ARGV[2] then written = 0 end
local mode = ARGV[4]
local n = tonumber(ARGV[8])
local i = 9 + 2 * n
local nevents = tonumber(ARGV[i])
local anything = n > 0 or nevents > 0
if written == 1 then
  if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 9, 8 + 2 * n)) end
  local j = i + 1
  for _ = 1, nevents do
    local np = tonumber(ARGV[j])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[#ARGV], '*', unpack(ARGV, j + 1, j + 2 * np))
    j = j + 1 + 2 * np
  end
  if mode == 'next' then
    redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[6])
  end
end
local finished = 0
if mode == 'finish' and (written == 1 or (written == -1 and not anything)) then
  local raw = redis.call('HGET', KEYS[4], ARGV[3])
  if raw and cjson.decode(raw).task == ARGV[7] then
    redis.call('ZREM', KEYS[3], ARGV[3])
    redis.call('HDEL', KEYS[4], ARGV[3])
    finished = 1
  end
end
if mode == 'guard' then
  if written == 1 then
    if redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('PEXPIRE', KEYS[5], ARGV[5]) else written = 0 end
  end
elseif redis.call('GET', KEYS[5]) == ARGV[1] then
  redis.call('DEL', KEYS[5])
end
return {written, finished}
"""

# KEYS: lock.  ARGV: token.  -> 1 when released.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock.  ARGV: token, ttl_ms.  -> 1 when extended.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock, pod.  ARGV: token, fence, ttl_ms.  -> 1 when extended, 0 when the lock or the fence is lost.
# Run immediately before a side effect (a warm-pool claim, CreateTags, RunInstances, TerminateInstances):
# the holder still owns the pod, and keeps it for another ttl_ms, or it must not act at all.
GUARD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'fence') ~= ARGV[2] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""

# KEYS: pod, outbox.  ARGV: fence, nfields, field, value, ..., then event field, value pairs.
# -> 1 when written, 0 when the fence is stale, -1 when the pod is unknown.
CAS_WRITE = """
local current = redis.call('HGET', KEYS[1], 'fence')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
local i = 3
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
if #ARGV >= i then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[#ARGV], '*', unpack(ARGV, i, #ARGV - 1))
end
return 1
"""

# KEYS: outbox stream.  ARGV: group.  -> entries trimmed. Drop the entries ``group`` has settled: those
# older than its oldest pending entry, or, with none pending, every entry it has been handed. Unread
# and pending entries stay; a stream without the group is left alone.
TRIM_SETTLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local delivered = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then delivered = info['last-delivered-id'] end
end
if not delivered then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local floor = pending[2]
if not floor then
  local ms, seq = string.match(delivered, '^(%d+)-(%d+)$')
  floor = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""

# KEYS: pod, pods, node_pods, nodes, due, due_task.
# ARGV: uid, namespace, name, node, spec, now, create task name, rebuilt ("1": a record re-created after
# Redis lost its data, flagged only when the record is new), n, then n final phases, then the life
# fields. -> generation, or -1 when the pod is being deleted. A record that was deleted and is desired
# again (same UID) starts a fresh lifecycle once its phase is one of the final phases: it drops exactly
# the life fields and takes the next attempt number, so no ClientToken of the last life is sent again.
# The caller passes vkec2.domain.phases.FINAL_PHASES and LIFE_FIELDS, the one definition of both.
# A Pending record is due a create step now (the one the caller publishes next), unless a chain of
# its life already has a step due.
PUT_DESIRED = """
local exists = redis.call('EXISTS', KEYS[1])
local fresh = exists == 0
if exists == 1 and redis.call('HGET', KEYS[1], 'deleted') == '1' then
  local phase = redis.call('HGET', KEYS[1], 'phase')
  local n = tonumber(ARGV[9])
  local final = false
  for i = 10, 9 + n do
    if phase == ARGV[i] then final = true end
  end
  if final then
    if #ARGV > 9 + n then redis.call('HDEL', KEYS[1], unpack(ARGV, 10 + n, #ARGV)) end
    -- a new life goes on counting attempts: its ClientTokens never repeat the last life's
    redis.call('HINCRBY', KEYS[1], 'attempt', 1)
    redis.call('HSET', KEYS[1], 'phase', 'Pending', 'deleted', '0', 'created_at', ARGV[6])
    fresh = true
  else
    return -1
  end
end
if exists == 0 then
  redis.call('HSET', KEYS[1], 'phase', 'Pending', 'attempt', '0', 'fence', '0', 'deleted', '0',
             'created_at', ARGV[6], 'rebuilt', ARGV[8])
end
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'namespace', ARGV[2], 'name', ARGV[3], 'node', ARGV[4],
           'spec', ARGV[5], 'updated_at', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
local pending = redis.call('HGET', KEYS[1], 'phase') == 'Pending'
if pending and (fresh or not redis.call('ZSCORE', KEYS[5], ARGV[1])) then
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
  redis.call('HSET', KEYS[6], ARGV[1],
             cjson.encode({task = ARGV[7], generation = generation, resumes = 0}))
end
return generation
"""

# KEYS: pod, due, due_task.  ARGV: now, grace ("" when the delete names none), delete task name, uid.
# -> new generation, or -1 when the pod is unknown. The pod is due a delete step now (the one the
# caller publishes next), whatever step of a create was due.
MARK_DELETED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'deleted', '1', 'updated_at', ARGV[1])
if ARGV[2] ~= nil and ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'deletion_grace', ARGV[2]) end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], cjson.encode({task = ARGV[3], generation = generation, resumes = 0}))
return generation
"""

# KEYS: pod, due, due_task.  ARGV: fence, uid, due time, due step JSON, then field, value pairs.
# -> 1 when written, 0 when the fence is stale, -1 when the pod is unknown. A chain's next step:
# the record names it (next_task) and the pod is due it, in one fenced write.
SCHEDULE_NEXT = """
local current = redis.call('HGET', KEYS[1], 'fence')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5, #ARGV))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return 1
"""
# KEYS: pod, due, due_task.  ARGV: fence, uid, task name.  -> 1 when the step was due, 0 when not
# (another task's step is due, or the fence is stale). A chain of ``task`` ended: nothing is due.
FINISH_CHAIN = """
local current = redis.call('HGET', KEYS[1], 'fence')
if current and current ~= ARGV[1] then return 0 end
local raw = redis.call('HGET', KEYS[3], ARGV[2])
if not raw or cjson.decode(raw).task ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
"""

# KEYS: due, due_task.  ARGV: uid, task name, due time.  -> 1 when moved. A step that retries later
# (Celery's back-off) is due later; only when ``task`` is the pod's due step.
POSTPONE = """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw or cjson.decode(raw).task ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS: due, due_task, then pod and lock of each candidate.  ARGV: per candidate uid, the due time
# read, the new due time, the new due step JSON.  -> the UIDs claimed. A candidate is claimed (its
# due time moved on, so the next pass does not publish it again) only while its due time is the one
# read (nobody moved it meanwhile) and its pod lock is free; a pod without a record is dropped.
CLAIM_DUE = """
local claimed = {}
for i = 0, (#ARGV / 4) - 1 do
  local uid, seen, due, step = ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3], ARGV[4 * i + 4]
  local score = redis.call('ZSCORE', KEYS[1], uid)
  if redis.call('EXISTS', KEYS[3 + 2 * i]) == 0 then
    redis.call('ZREM', KEYS[1], uid)
    redis.call('HDEL', KEYS[2], uid)
  elseif score and tonumber(score) == tonumber(seen) and redis.call('EXISTS', KEYS[4 + 2 * i]) == 0 then
    redis.call('ZADD', KEYS[1], due, uid)
    redis.call('HSET', KEYS[2], uid, step)
    table.insert(claimed, uid)
  end
end
return claimed
"""

# KEYS: pool ready set, pool instances hash.  -> {instance_id, instance JSON} or nil when empty.
CLAIM = """
local id = redis.call('SPOP', KEYS[1])
if not id then return nil end
local doc = redis.call('HGET', KEYS[2], id) or '{}'
redis.call('HDEL', KEYS[2], id)
return {id, doc}
"""

# KEYS: pool hosts hash, pool claims hash.  ARGV: uid, now.  -> the host ID claimed, or nil.
# A slot on a Dedicated Host for one pod, chosen and taken in one step: the host the pod already
# claims in this pool, else the oldest host EC2 shows available (and the fleet does not know to be
# scrubbing) whose claims and instances leave a slot free. Two workers never take one Mac host.
CLAIM_HOST = """
local uid = ARGV[1]
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  if cjson.decode(held[i + 1])[uid] then return held[i] end
end
local hosts = redis.call('HGETALL', KEYS[1])
local best, best_at = nil, nil
for i = 1, #hosts, 2 do
  local h = cjson.decode(hosts[i + 1])
  if h.ec2_state == 'available' and (tonumber(h.scrubbing_since) or 0) == 0 then
    local raw = redis.call('HGET', KEYS[2], hosts[i])
    local n = 0
    if raw then for _ in pairs(cjson.decode(raw)) do n = n + 1 end end
    local used = math.max(n, #(h.instances or {}))
    local at = tonumber(h.allocated_at) or 0
    if used < (tonumber(h.slots) or 1) and (best == nil or at < best_at) then best, best_at = hosts[i], at end
  end
end
if not best then return nil end
local raw = redis.call('HGET', KEYS[2], best)
local claims = raw and cjson.decode(raw) or {}
claims[uid] = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], best, cjson.encode(claims))
return best
"""

# KEYS: pool claims hash.  ARGV: host ID, uid.  -> 1 when the pod held a claim on the host.
DROP_HOST_CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local claims = cjson.decode(raw)
if not claims[ARGV[2]] then return 0 end
claims[ARGV[2]] = nil
if next(claims) == nil then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(claims)) end
return 1
"""

# KEYS: intent, slots.  -> the sequence number of the pool's allocation in flight, or a new one
# (recorded as in flight): a step that stopped after AllocateHosts sends the same ClientToken again.
HOST_INTENT = """
local pending = redis.call('GET', KEYS[1])
if pending then return tonumber(pending) end
local seq = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], seq)
return seq
"""

# KEYS: pod, pods, node_pods, lock, due, due_task.  ARGV: uid.
FORGET = """
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
"""

# KEYS: counter.  ARGV: floor.  -> the counter, raised to at least floor (never lowered).
RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], ARGV[1])
  return floor
end
return current
"""

# KEYS: bucket.  ARGV: rate, burst, max_wait, n.  -> seconds to wait (string); "-1" when over max_wait.
# A token bucket on Redis's own clock. The bucket may go negative: each caller reserves its next
# tokens and waits until they exist, so waiters are served in order.
TAKE_TOKENS = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < n then
  wait = (n - tokens) / rate
  if wait > max_wait then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
    return '-1'
  end
end
tokens = tokens - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + math.ceil(max_wait) + 60)
return tostring(wait)
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts above, registered on one Redis client."""

    acquire: Script
    release: Script
    extend: Script
    guard: Script
    cas_write: Script
    put_desired: Script
    mark_deleted: Script
    claim: Script
    forget: Script
    take_tokens: Script
    schedule_next: Script
    finish_chain: Script
    postpone: Script
    claim_due: Script
    raise_to: Script
    claim_host: Script
    drop_host_claim: Script
    host_intent: Script
    trim_settled: Script
    acquire_read: Script
    step_end: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            acquire=client.register_script(ACQUIRE),
            release=client.register_script(RELEASE),
            extend=client.register_script(EXTEND),
            guard=client.register_script(GUARD),
            cas_write=client.register_script(CAS_WRITE),
            put_desired=client.register_script(PUT_DESIRED),
            mark_deleted=client.register_script(MARK_DELETED),
            claim=client.register_script(CLAIM),
            forget=client.register_script(FORGET),
            take_tokens=client.register_script(TAKE_TOKENS),
            schedule_next=client.register_script(SCHEDULE_NEXT),
            finish_chain=client.register_script(FINISH_CHAIN),
            postpone=client.register_script(POSTPONE),
            claim_due=client.register_script(CLAIM_DUE),
            raise_to=client.register_script(RAISE_TO),
            claim_host=client.register_script(CLAIM_HOST),
            drop_host_claim=client.register_script(DROP_HOST_CLAIM),
            host_intent=client.register_script(HOST_INTENT),
            trim_settled=client.register_script(TRIM_SETTLED),
            acquire_read=client.register_script(ACQUIRE_READ),
            step_end=client.register_script(STEP_END),
        )
