from .cpu_heap import steady_heap, steady_heap_for_cpu_run
from .model_checks import feature_stride_mismatches, warn_feature_stride_mismatches
from .runner_utils import (check_data_paths, convert_official_load_from, default_work_dir,
                           enable_amp, explain_data_errors, load_config, set_launcher_env,
                           setup_cpu_distributed, strict_loading, task_scope,
                           trust_checkpoints)

__all__ = ['check_data_paths', 'convert_official_load_from', 'default_work_dir',
           'enable_amp', 'explain_data_errors', 'load_config', 'set_launcher_env',
           'setup_cpu_distributed', 'strict_loading', 'task_scope', 'trust_checkpoints',
           'feature_stride_mismatches', 'warn_feature_stride_mismatches', 'steady_heap',
           'steady_heap_for_cpu_run']
