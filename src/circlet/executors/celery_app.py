"""What the server and its workers agree on about Celery: the app's configuration, the task's
name, the queue of a resource class and the task message (celery_exec.py publishes, worker.py
consumes). Nothing of the server here: workers import it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from circlet.core.ports import RunRequest
from circlet.executors import protocol

TASK_NAME = "circlet.run_build"
QUEUE_PREFIX = "circlet."
MESSAGE_VERSION = 2  # 2: one task per container ("node")


def queue_name(resource_class: str) -> str:
    """The broker queue of a resource class."""
    return f"{QUEUE_PREFIX}{resource_class}"


def make_celery(broker_url: str, *, name: str = "circlet") -> Celery:
    """A Celery app configured the way both sides need it (server publishes, worker consumes).

    acks_late + reject_on_worker_lost: a message is acknowledged once its build is over, and
    given back to the broker if the worker process dies. prefetch 1: a worker holds no more
    messages than it has free slots, so a busy worker never sits on builds another could run.
    """
    app = Celery(name, broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_create_missing_queues=True,
        task_default_queue=queue_name("medium"),
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,  # a worker waits for a restarting broker forever
        worker_cancel_long_running_tasks_on_connection_loss=False,  # builds survive a broker restart
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_heartbeat=10,  # amqp: notice a dead connection
        broker_pool_limit=4,
    )
    return app


def encode_message(request: RunRequest, node: int) -> dict[str, Any]:
    """The task's only argument: run container `node` of the build (one task per container)."""
    return {"v": MESSAGE_VERSION, "request": protocol.encode_request(request), "node": node}


def decode_message(message: dict[str, Any]) -> tuple[RunRequest, int]:
    """The build and the container to run. ValueError for a message of another version (a worker
    and a server of different releases) or a node out of the build's range."""
    if message.get("v") != MESSAGE_VERSION:
        raise ValueError(f"unknown circlet task message version {message.get('v')!r}")
    request = protocol.decode_request(message["request"])
    node = message.get("node")
    if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < max(1, request.parallelism):
        raise ValueError(f"node {node!r} is not a container of build {request.build_id}")
    return request, node
