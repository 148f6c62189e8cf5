"""Re-export of :mod:`dexwm_robot.config` (the parameter files), kept under its earlier name."""

from dexwm_robot.config import (  # noqa: F401
    PACKAGE,
    ConfigError,
    config_dir,
    from_dict,
    installed_prefix,
    load_section,
    load_yaml,
    project_dir,
    project_dir_candidates,
    source_root,
)
