"""Former home of the CLI's model record; it is ``services.workspace_info`` now (one model
stack for the app and the CLI). These names stay for scripts that import them from here."""

from uif_explorer.services.workspace_info import (  # noqa: F401
    ModelChoice,
    read_workspace_info,
    write_workspace_info,
)
