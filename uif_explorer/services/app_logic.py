"""Former home of the app's services, now split by idea: ``analysis`` (presets, workspace
files, settings, restart decisions, plan preview), ``eval_data`` (bundled data loaders and
accuracy), ``pruning_jobs``, ``export_report`` and the backends. These names stay importable
from here for scripts outside the app (benchmarks, notebooks, security tests)."""

from uif_explorer.services.analysis import (  # noqa: F401
    IMAGE_CHOICES,
    SENS_PRESETS,
    Preset,
    read_search,
    read_sens,
    read_settings,
    sens_progress,
    write_settings,
)
from uif_explorer.services.eval_data import (  # noqa: F401
    CALIB_BATCHES,
    accuracy,
    calib_loader,
    data_source,
    test_loader,
)
