"""The `celery` executor: builds run on a fleet of workers (`circlet worker`, worker.py), reached
through a Celery broker (Redis by default, RabbitMQ with an amqp:// URL).

- `submit` publishes one task message per container of the build (`parallelism: N`: N
  messages, node 0..N-1) on the queue of its resource class (`circlet.<class>`, e.g.
  `circlet.medium`); a worker consumes the queues of the classes it serves, so a job's
  containers spread over the workers of its class. The message carries the RunRequest as JSON
  (executors/protocol.py), a few KB, and the node index. The server follows the containers
  (core/workers.py start_container / finish_container): the build runs from the first
  container's start and ends with the last one's report.
- Delivery is at least once: tasks are acknowledged late (when the build is over), so a worker
  that dies leaves its message to be delivered again, and the fleet publishes a waiting build
  again when its message seems lost (fleet.py). The service refuses to start a build twice, so
  a duplicate is dropped by whichever worker gets it.
- `cancel` only tells the fleet: the service already marked the build canceled, and the
  worker running it learns so from its next heartbeat reply (every 0.5 s) and kills its steps.

The server never runs tasks: it only publishes. Workers never touch the database.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery  # type: ignore[import-untyped]

from circlet.core.ports import RunReporter, RunRequest
from circlet.executors.celery_app import TASK_NAME, encode_message, queue_name
from circlet.fleet import Fleet

log = logging.getLogger("circlet.executors.celery")

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.25, "interval_max": 0.5}


class CeleryExecutor:
    """A Dispatcher that publishes builds for the workers. Thread-safe."""

    def __init__(self, *, app: Celery, fleet: Fleet) -> None:
        self.app = app
        self.fleet = fleet
        self._lock = threading.Lock()  # one publisher at a time on the shared producer pool

    def start(self, reporter: RunReporter) -> None:
        """Nothing to start here: the fleet's sweeper starts with the service."""
        return None

    def submit(self, request: RunRequest) -> None:
        """Publish the build on its class's queue; never raises for a broker that is down (the
        fleet publishes it again later)."""
        nodes = range(max(1, request.parallelism))
        messages = [encode_message(request, node) for node in nodes]
        queue = queue_name(request.plan.resource_class)
        build_id = request.build_id

        def publish(only: frozenset[int] | None = None) -> bool:
            chosen = [m for node, m in zip(nodes, messages, strict=True) if only is None or node in only]
            try:
                with self._lock:
                    for message in chosen:  # a started container refuses a duplicate
                        self.app.send_task(
                            TASK_NAME,
                            args=[message],
                            queue=queue,
                            routing_key=queue,
                            retry=True,
                            retry_policy=PUBLISH_RETRY,
                        )
            except Exception as exc:  # the broker is down or restarting: the fleet tries again
                log.warning("event=publish_failed build_id=%s queue=%s error=%r", build_id, queue, exc)
                return False
            log.info("event=build_published build_id=%s queue=%s containers=%s", build_id, queue, len(chosen))
            return True

        self.fleet.submitted(build_id, request.plan.resource_class, publish)

    def cancel(self, build_id: int) -> bool:
        """The service marked the build canceled: a waiting one is dropped by the worker that
        gets it (build_started says no); a running one is stopped at the worker's next
        heartbeat. True: the cancel is under way."""
        self.fleet.forget(build_id)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Close the broker connections. Builds keep running on their workers."""
        try:
            self.app.close()
        except Exception:
            log.exception("event=celery_close_failed")
