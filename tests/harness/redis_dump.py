"""Every key and value in a Redis database as one text blob, for tests that prove no secret is stored."""

from __future__ import annotations

import redis.asyncio as aioredis


class UnexpectedKeyType(AssertionError):
    pass


async def dump_redis(client: aioredis.Redis) -> str:
    """Keys, hash fields and values, stream fields, list/set/zset members, joined by newlines. A key of a
    type this does not read fails loudly, so a new kind of storage cannot slip past a secret scan."""
    dump: list[str] = []
    async for key in client.scan_iter("*"):
        dump.append(key)
        kind = await client.type(key)
        if kind == "string":
            dump.append(str(await client.get(key)))
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                dump += [field, value]
        elif kind == "stream":
            for _id, fields in await client.xrange(key):
                dump += [*fields.keys(), *fields.values()]
        elif kind == "list":
            dump += await client.lrange(key, 0, -1)
        elif kind == "set":
            dump += list(await client.smembers(key))
        elif kind == "zset":
            dump += [str(member) for member in await client.zrange(key, 0, -1)]
        else:
            raise UnexpectedKeyType(f"unexpected key type {kind} for {key}")
    return "\n".join(dump)
