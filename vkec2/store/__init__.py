"""The state store: the one door to Redis (key schema, Lua scripts and every read and write).

Import :class:`~vkec2.store.redis_store.Store` from :mod:`vkec2.store.redis_store`; the key schema,
with the type, owner and lifetime of every key, is in :mod:`vkec2.store.keys`.
"""
