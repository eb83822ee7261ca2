"""Imports every domain's models so ``Base.metadata`` is complete for Alembic.

Add one line here when a domain gains a ``models.py``.
"""

from frontdesk.console import models as console_models  # noqa: F401
from frontdesk.core import audit, inbox, outbox, scheduler  # noqa: F401
from frontdesk.core.models import Base

metadata = Base.metadata
