"""testcontainers' Kafka (KRaft), where a Docker engine exists; a clear error where not."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest

from outage_sms.brokers import running_broker
from tests.kafka_helpers import TopicReader, produce


def docker_engine() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    done = subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False)
    return done.returncode == 0


HAS_DOCKER = docker_engine()


@pytest.mark.skipif(HAS_DOCKER, reason="a Docker engine is present: the real test runs")
def test_container_kind_without_docker_names_the_alternative() -> None:
    # In a subprocess: the Docker client leaks a socket when no engine answers.
    done = subprocess.run(
        [sys.executable, "-m", "outage_sms", "broker", "--kind", "container"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "Docker engine" in done.stderr and "--kind kafka" in done.stderr


@pytest.mark.skipif(not HAS_DOCKER, reason="needs a Docker engine (users' laptops)")
def test_container_broker_round_trip() -> None:
    with running_broker("container") as broker:

        async def go() -> None:
            await produce(broker.bootstrap, "rt", [(b"k", b"v")])
            r = TopicReader(broker.bootstrap, "rt")
            await r.until(lambda x: len(x.records) == 1, what="1 record")
            await r.close()

        asyncio.run(go())
