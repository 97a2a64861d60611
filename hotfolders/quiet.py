"""Keep TensorFlow, MediaPipe and absl quiet unless the user asked for --verbose.

Must run before TensorFlow or MediaPipe is imported: both read their log level from the
environment once, at import time.
"""
from __future__ import annotations

import logging
import os
import warnings


def silence(verbose: bool = False) -> None:
    """Hide native-library chatter (C++ glog, TF banners, absl warnings) unless verbose."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["GLOG_minloglevel"] = "3"
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("KMP_WARNINGS", "0")
    warnings.filterwarnings("ignore", category=UserWarning, module="google.protobuf")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # absl writes "WARNING: All log messages before absl::InitializeLog()..." otherwise
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        absl_logging.set_stderrthreshold("error")
    except ImportError:
        pass


silence(verbose=os.environ.get("FACEDROP_VERBOSE", "") not in ("", "0"))
