"""Administration: virtual keys, budget overrides and spend, by CLI and gRPC.

commands        ``tollgate keys ...`` and ``tollgate budget ...``
                (``add_admin_commands`` registers them)
spend_views     spend summed over chosen dimensions (``group_spend``)
service         the ``tollgate.admin.v1.Admin`` gRPC API
                (``start_admin_server``); imported on its own so that
                the command line does not load gRPC
_gen            code generated from protos/ by scripts/gen-protos
"""

from extproc.admin.commands import add_admin_commands
from extproc.admin.spend_views import group_spend

__all__ = ["add_admin_commands", "group_spend"]
