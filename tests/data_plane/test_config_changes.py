"""Config changes reach a real data plane piecewise, from the changes stream, and anything the stream cannot
vouch for (a version bumped without an event, entries trimmed away before they were applied) falls back to
reading everything. `mhp_config_applies{mode}` tells which path ran; the requests tell that the table is
right either way."""

from __future__ import annotations

import redis

from shared import keys
from shared.models import Route
from tests.data_plane.backends import HttpBackend
from tests.data_plane.conftest import DataPlane
from tests.data_plane.helpers import configure, get, proxy_to
from tests.data_plane.redis_config import write_config


def _applies(plane: DataPlane) -> tuple[float, float]:
    return plane.metric("mhp_config_applies_total", mode="changes"), plane.metric(
        "mhp_config_applies_total", mode="full"
    )


def _settled(plane: DataPlane, redis_sync: redis.Redis, backend: HttpBackend) -> None:
    """One change seen through: after it, the sync loop is subscribed (a wake-up sent while it was still
    subscribing is covered by the reload it does on subscribing, which is a full read, not a change)."""
    configure(redis_sync, plane, [proxy_to(backend.url, "warm-up.test")])


def test_changes_are_applied_piecewise(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    _settled(data_plane, redis_sync, http_backend)
    changes, full = _applies(data_plane)
    configure(
        redis_sync, data_plane, [proxy_to(http_backend.url, "a.test"), proxy_to(http_backend.url, "b.test")]
    )
    assert get(data_plane, "/x", host="a.test")[0] == 200
    # A route scoped to a.test sends /api there to a dead port; b.test is untouched.
    route = Route(
        id="r1",
        path_pattern="/api",
        target_url="http://127.0.0.1:9",
        scope="proxies",
        proxy_hostnames=["a.test"],
    )
    configure(redis_sync, data_plane, [], [route])
    assert get(data_plane, "/api/x", host="a.test")[0] == 502
    assert get(data_plane, "/api/x", host="b.test")[0] == 200
    # A changed proxy and a deleted one, in one transaction.
    version = write_config(
        redis_sync,
        proxies=[proxy_to("http://127.0.0.1:9", "b.test")],
        delete_proxies=["a.test"],
    )
    data_plane.wait_for_version(version)
    assert get(data_plane, "/x", host="a.test")[0] == 404
    assert get(data_plane, "/x", host="b.test")[0] == 502
    assert _applies(data_plane) == (changes + 3, full)  # three versions, none of them read in full


def test_a_gap_in_the_stream_means_reading_everything(
    data_plane: DataPlane, redis_sync: redis.Redis, http_backend: HttpBackend
) -> None:
    _settled(data_plane, redis_sync, http_backend)
    changes, full = _applies(data_plane)
    # A version bump with no event (a hand edit, an older writer): nothing says what changed.
    redis_sync.hset(keys.proxies(), "hand.test", proxy_to(http_backend.url, "hand.test").model_dump_json())
    version = int(redis_sync.incr(keys.config_version()))
    redis_sync.publish(keys.changes_channel(), str(version))
    data_plane.wait_for_version(version)
    assert get(data_plane, "/x", host="hand.test")[0] == 200
    assert _applies(data_plane) == (changes, full + 1)

    # Entries trimmed away before this data plane applied them: the next one it sees skips a version.
    first = write_config(redis_sync, proxies=[proxy_to(http_backend.url, "trimmed.test")], publish=False)
    second = write_config(redis_sync, proxies=[proxy_to(http_backend.url, "later.test")], publish=False)
    assert second == first + 1
    redis_sync.xtrim(keys.changes_stream(), maxlen=1, approximate=False)
    redis_sync.publish(keys.changes_channel(), str(second))
    data_plane.wait_for_version(second)
    assert get(data_plane, "/x", host="trimmed.test")[0] == 200
    assert get(data_plane, "/x", host="later.test")[0] == 200
    assert _applies(data_plane) == (changes, full + 2)

    # Back on the stream afterwards.
    configure(redis_sync, data_plane, [proxy_to(http_backend.url, "after.test")])
    assert get(data_plane, "/x", host="after.test")[0] == 200
    assert _applies(data_plane) == (changes + 1, full + 2)
