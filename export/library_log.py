"""Send a third-party library's chatter (prints, logging) to a log file instead of the terminal.

ModelOpt and ONNX Runtime's quantizer print and log freely, and ModelOpt re-creates its own handlers on
every call. Inside `captured()` all of that goes to one file; afterwards every logger's handlers are put
back as they were, so no handler keeps pointing at the closed file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

LIBRARIES = ("modelopt", "onnxruntime", "onnxslim")


def _library_loggers() -> list[logging.Logger]:
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in LIBRARIES]
    return [logging.getLogger(n) for n in names]


@contextlib.contextmanager
def captured(log_path: Path) -> Iterator[None]:
    """Within the block, prints and log records of the libraries go to `log_path` (appended)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        saved = {lg: (lg.handlers[:], lg.propagate) for lg in [root, *_library_loggers()]}
        for logger in saved:
            logger.handlers = [handler] if logger is root else []
            logger.propagate = True
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        finally:
            for logger in _library_loggers():
                if logger not in saved:
                    logger.handlers, logger.propagate = [], True
            for logger, (handlers, propagate) in saved.items():
                logger.handlers, logger.propagate = handlers, propagate
