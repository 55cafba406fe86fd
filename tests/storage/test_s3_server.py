"""tests.services.s3_server(): a moto S3 server in its own process, gone after the block."""

from __future__ import annotations

import os
import urllib.request
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from tests.services import _answers, s3_server


def _command_lines() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_s3_server_is_a_separate_process_and_stops(aws_env: None) -> None:
    with s3_server() as url:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=5) as response:
            assert response.status == 200
        client = boto3.client(
            "s3", endpoint_url=url, config=Config(s3={"addressing_style": "path"})
        )
        client.create_bucket(Bucket="probe-bucket")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["probe-bucket"]
        # its own process: a moto.server command line on that port that is not ours
        assert any(
            f"moto.server -H 127.0.0.1 -p {parts.port}" in command
            for pid, command in _command_lines().items()
            if pid != os.getpid()
        )
    assert not _answers("127.0.0.1", parts.port, 0.5)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
