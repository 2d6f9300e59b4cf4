"""The Python emitter snippet of docs/redis.md, run exactly as written against
a real redis-server with roomcast's function library loaded."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import redis

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_url(redis_server):
    """The throwaway Redis with roomcast's function library loaded."""
    library = (ROOT / "src" / "redis" / "roomcast.lua").read_text()
    redis.Redis.from_url(redis_server).function_load(library, replace=True)
    return redis_server


def snippet():
    doc = (ROOT / "docs" / "redis.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 1, "docs/redis.md has one Python snippet"
    return blocks[0]


def test_the_documented_snippet_publishes_into_the_room(redis_url):
    r = redis.Redis.from_url(redis_url)
    sub = r.pubsub()
    # Room channels are sharded channels (docs/redis.md).
    sub.ssubscribe("roomcast:{prices:eth}")
    assert sub.get_sharded_message(timeout=2)["type"] == "ssubscribe"
    out = subprocess.run(
        [sys.executable, "-c", snippet()],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("published as seq 1 of epoch "), out.stdout
    message = sub.get_sharded_message(timeout=2)
    epoch, seq, origin, text = message["data"].decode().split(" ", 3)
    assert (seq, origin) == ("1", "-")
    assert text.startswith(
        '{"event":"price:tick","room":"prices:eth","data":{"p":3120.5},'
        '"from":"backend","seq":1,"ts":'
    ), text
    entries = r.xrange("roomcast:{prices:eth}:log")
    assert [(i, f[b"m"].decode()) for i, f in entries] == [(b"0-1", text)]
