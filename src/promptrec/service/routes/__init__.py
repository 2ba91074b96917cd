"""The HTTP API's routers, one per resource; :func:`~promptrec.service.app.create_app` mounts
them around one :class:`~promptrec.service.routes.common.Service`."""

from promptrec.service.routes import catalogue, feedback, health, models, recommend, users
from promptrec.service.routes.common import Service

ROUTERS = (recommend, feedback, catalogue, users, models, health)

__all__ = ["ROUTERS", "Service"]
