"""Exceptions raised by library code; the CLI turns them into one line and an exit code."""

from __future__ import annotations


class Hep2EdgeError(Exception):
    """Base class: a problem a user can fix, reported as one line (no traceback)."""

    exit_code = 2


class DataError(Hep2EdgeError):
    """A dataset, image or manifest is missing, unreadable or inconsistent."""


class ImageReadError(DataError):
    """One image cannot be read; the message names the file and the problem."""


class IncompleteImageError(ImageReadError):
    """The file ends early (truncated): possibly still being written, so a watcher reads it again later."""


class ConfigError(Hep2EdgeError):
    """An option or configuration file is invalid or a required input cannot be resolved."""


class ContractError(Hep2EdgeError):
    """A model file does not carry, or does not match, the hep2edge model contract."""


class MissingExtraError(Hep2EdgeError):
    """An optional dependency is not installed; names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this command needs '{module}', which is not installed: pip install 'hep2edge[{extra}]'"
        )
        self.module = module
        self.extra = extra


class RegistryError(Hep2EdgeError):
    """A name is not in a registry; the message lists the valid names."""


def require(module: str, extra: str) -> object:
    """Import an optional module or raise MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
        raise MissingExtraError(module, extra) from exc
