"""Imports every domain's models so ``Base.metadata`` is complete for Alembic.

Add one line here when a domain gains a ``models.py``.
"""

from frontdesk.accounts import models as accounts_models  # noqa: F401
from frontdesk.billing import models as billing_models  # noqa: F401
from frontdesk.booking import models as booking_models  # noqa: F401
from frontdesk.catalog import models as catalog_models  # noqa: F401
from frontdesk.console import models as console_models  # noqa: F401
from frontdesk.core import audit, inbox, outbox, ratelimit, scheduler  # noqa: F401
from frontdesk.core.models import Base
from frontdesk.his import models as his_models  # noqa: F401
from frontdesk.messaging import models as messaging_models  # noqa: F401
from frontdesk.reconciliation import models as reconciliation_models  # noqa: F401
from frontdesk.reports import models as reports_models  # noqa: F401
from frontdesk.wechat.oa import models as wechat_oa_models  # noqa: F401

metadata = Base.metadata
