"""Once-for-all (the guide's section 4.1.3.2): elastic supernets, sandwich training, search.

    from uif_explorer.torch.ofa import OFAPruner
    ofa_pruner = OFAPruner(model, inputs)
    ofa_model = ofa_pruner.ofa_model([0.5, 0.75, 1], excludes=None, auto_add_excludes=True)

See ``docs/ofa.md`` for the subnet_setting format, the files and the measured numbers.
"""

from uif_explorer.core.evolution import SearchConfig
from uif_explorer.torch.ofa.bundled import (
    bundled_search,
    load_bundled_supernet,
    load_supernet,
    save_supernet,
)
from uif_explorer.torch.ofa.dynamic import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicConvTranspose2d,
    DynamicLinear,
)
from uif_explorer.torch.ofa.pruner import (
    OFAPruner,
    active_setting,
    describe,
    get_static_subnet,
    load_subnet_config,
    reset_bn_running_stats_for_calibration,
    sample_random_subnet,
    sample_subnet,
    save_subnet_config,
    set_subnet,
    subnet_cost,
)
from uif_explorer.torch.ofa.search import (
    ParetoSet,
    RunOptions,
    load_search,
    run_evolutionary_search,
    run_random_search,
)
from uif_explorer.torch.ofa.space import OFASpace, SubnetSettingError
from uif_explorer.torch.ofa.training import sandwich_step, train

__all__ = [
    "DynamicBatchNorm2d",
    "DynamicConv2d",
    "DynamicConvTranspose2d",
    "DynamicLinear",
    "OFAPruner",
    "OFASpace",
    "ParetoSet",
    "RunOptions",
    "SearchConfig",
    "SubnetSettingError",
    "active_setting",
    "bundled_search",
    "describe",
    "get_static_subnet",
    "load_bundled_supernet",
    "load_search",
    "load_subnet_config",
    "load_supernet",
    "reset_bn_running_stats_for_calibration",
    "run_evolutionary_search",
    "run_random_search",
    "sample_random_subnet",
    "sample_subnet",
    "sandwich_step",
    "save_subnet_config",
    "save_supernet",
    "set_subnet",
    "subnet_cost",
    "train",
]
