"""DeliveryStore on SQLAlchemy Core: the `webhook_deliveries` table (migration 0002).

Same conventions as store/sql.py: explicit row <-> dataclass functions, one short transaction
per method, reads without a transaction, one store shared by every thread.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from circlet.core.errors import NotFound
from circlet.core.projects import Delivery, DeliveryState
from circlet.store.sql import _READ_ONLY
from circlet.store.tables import builds, webhook_deliveries

D = webhook_deliveries.c


def _delivery_to_values(delivery: Delivery) -> dict[str, Any]:
    """Every column but id."""
    return {
        "build_id": delivery.build_id,
        "url": delivery.url,
        "source": delivery.source,
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_at,
        "created_at": delivery.created_at,
        "finished_at": delivery.finished_at,
    }


def _delivery_from_row(row: sa.Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        build_id=m["build_id"],
        url=m["url"],
        source=m["source"],
        state=DeliveryState(m["state"]),
        attempts=m["attempts"],
        last_status=m["last_status"],
        last_error=m["last_error"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        finished_at=m["finished_at"],
    )


class SqlDeliveryStore:
    """DeliveryStore on an SQLAlchemy engine (the one SqlBuildStore uses; see `make_engine`).

    Beyond the protocol: `add_delivery` raises NotFound for an unknown build, `save_delivery`
    for an unknown delivery id; a delivery without `created_at` gets the current time.
    `list_deliveries` may also filter by the builds' project.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        if engine.dialect.name == "postgresql":
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._reader = engine.execution_options(**{_READ_ONLY: True})

    def _all(self, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self._reader.connect() as connection:
            return list(connection.execute(statement))

    def add_delivery(self, delivery: Delivery) -> Delivery:
        delivery = replace(delivery, created_at=delivery.created_at or datetime.now(UTC))
        try:
            with self._engine.begin() as connection:
                delivery_id = connection.execute(
                    webhook_deliveries.insert()
                    .values(_delivery_to_values(delivery))
                    .returning(webhook_deliveries.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            raise NotFound(f"no build with id {delivery.build_id}") from None
        return replace(delivery, id=delivery_id)

    def save_delivery(self, delivery: Delivery) -> None:
        """Replace every field but id; NotFound for an unknown id."""
        if delivery.id is None:
            raise ValueError("save_delivery needs a stored delivery (id is None)")
        with self._engine.begin() as connection:
            result = connection.execute(
                webhook_deliveries.update().where(D.id == delivery.id).values(_delivery_to_values(delivery))
            )
        if result.rowcount == 0:
            raise NotFound(f"no delivery with id {delivery.id}")

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        """Pending, with no next attempt time or one at or before `now`; by id (oldest first)."""
        statement = (
            sa.select(webhook_deliveries)
            .where(
                D.state == DeliveryState.PENDING.value,
                sa.or_(D.next_attempt_at.is_(None), D.next_attempt_at <= now),
            )
            .order_by(D.id)
            .limit(max(limit, 0))
        )
        return [_delivery_from_row(row) for row in self._all(statement)]

    def list_deliveries(
        self, *, build_id: int | None = None, project_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        statement = sa.select(webhook_deliveries)
        if build_id is not None:
            statement = statement.where(D.build_id == build_id)
        if project_id is not None:
            statement = statement.where(
                D.build_id.in_(sa.select(builds.c.id).where(builds.c.project_id == project_id))
            )
        statement = statement.order_by(D.id.desc()).limit(max(limit, 0))
        return [_delivery_from_row(row) for row in self._all(statement)]
