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


def is_verbose() -> bool:
    return os.environ.get("FACEDROP_VERBOSE", "") not in ("", "0")


class native_stderr_hidden:
    """Context manager that points file descriptor 2 at /dev/null while native code starts.

    TensorFlow and MediaPipe print through absl/glog before any Python-side setting applies
    ("All log messages before absl::InitializeLog()..."), so the environment variables above
    cannot hide those lines; only the file descriptor can. Python exceptions still propagate.
    A no-op when verbose.
    """

    def __enter__(self) -> "native_stderr_hidden":
        self._saved = None
        if is_verbose():
            return self
        try:
            import sys

            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self._saved = None
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


def import_tensorflow():
    """Import TensorFlow quietly (once) and return the module."""
    with native_stderr_hidden():
        import tensorflow as tf
    if not is_verbose():
        tf.get_logger().setLevel(logging.ERROR)
    return tf


_NOISE = (
    b"WARNING: All log messages before absl::InitializeLog()",
    b"INFO: Created TensorFlow Lite",
    b"libpng warning:",
    b"To enable the following instructions",
    b"oneDNN custom operations are on",
)


def _is_noise(line: bytes) -> bool:
    # glog/absl lines look like "W0000 00:00:1795547088.443619    3957 file.cc:114] ..."
    if len(line) > 6 and line[:1] in b"IWEF" and line[1:5].isdigit() and line[5:6] == b" ":
        return True
    return any(line.startswith(prefix) or prefix in line[:120] for prefix in _NOISE)


_filtering = False


def filter_native_stderr() -> None:
    """Route native writes to fd 2 through a filter that drops glog/absl/TF start-up chatter.

    Python's own ``sys.stderr`` keeps writing straight to the terminal, so our messages are
    never delayed or lost; only what C++ code writes to fd 2 passes through the filter thread.
    Child processes inherit the filtered descriptor. A no-op when verbose or already active.
    """
    global _filtering
    if _filtering or is_verbose():
        return
    import sys
    import threading

    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return
    sys.stderr = open(original, "w", buffering=1, encoding="utf-8", errors="replace",
                      closefd=False)
    out = os.fdopen(os.dup(original), "wb", buffering=0)

    def write(data: bytes) -> None:
        # the terminal or journal may have gone (a closed stderr): keep draining the pipe
        # regardless, or every later write to fd 2 would block once it fills
        try:
            out.write(data)
        except (OSError, ValueError):
            pass

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line and not _is_noise(line):
                        write(line + b"\n")
                if len(pending) > 1 << 20:  # a torrent without newlines: pass it on
                    write(pending)
                    pending = b""
            if pending and not _is_noise(pending):
                write(pending)

    threading.Thread(target=pump, name="stderr-filter", daemon=True).start()
    _filtering = True
