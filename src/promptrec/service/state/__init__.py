"""The service's own state, in its room of the store (see :mod:`.state`)."""

from promptrec.service.state.served import Impression
from promptrec.service.state.state import ServiceState

__all__ = ["Impression", "ServiceState"]
