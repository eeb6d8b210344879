"""The shared cache (`CACHES` over Redis, `LCM_CACHE_URL`): Django's Redis backend with one client per process.

Django's `RedisCacheClient` builds a new `redis.Redis` for every operation (its ~170 response callbacks
included), which was a third of an unchanged live poll's CPU; a `redis.Redis` over a connection pool is
thread-safe, so one per pool serves every thread. `raw_client` gives `lcm.live` the client for the one
atomic script it runs (raise a change stamp to at least a version).
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _OneClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class SharedRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _OneClient

    def raw_client(self):
        """The `redis.Redis` that writes (keys through `make_key`; integers are stored as plain numbers)."""
        return self._cache.get_client(write=True)
