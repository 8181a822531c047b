"""Redis URLs: malformed ones and unreachable servers are one clear error; passwords never shown."""

import pytest

from voltci.connection import check_url, connect, redacted
from voltci.errors import BadInput, RedisUnavailable
from voltci.redis_server import free_port


@pytest.mark.parametrize("url", ["localhost:6379", "http://localhost/0", "redis://", "redis://host:notaport/0",
                                 "redis://host:1/zero"])
def test_malformed_urls_are_bad_input(url: str) -> None:
    with pytest.raises(BadInput, match="malformed Redis URL"):
        check_url(url)


def test_good_urls_pass() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@host:6380/1", "unix:///tmp/redis.sock", "redis://h"):
        check_url(url)


def test_unreachable_redis_is_one_line_without_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as info:
        connect(url, timeout=1)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def test_redacted_hides_only_the_password() -> None:
    assert redacted("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redacted("redis://h:1/0") == "redis://h:1/0"
