"""Library errors name parameters in backticks (`batch_size`); the CLI shows the running command's flags."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def command_flags(group: Any, argv: Sequence[str]) -> dict[str, str]:
    """Parameter name -> long flag of the (sub)command `argv` runs (`batch_size` -> `--batch-size`); {} for none."""
    command = group
    for word in (a for a in argv if not a.startswith("-")):
        found = getattr(command, "commands", {}).get(word)
        if found is None:
            break
        command = found
    if command is group:
        return {}
    return {p.name: next(o for o in p.opts if o.startswith("--")) for p in command.params
            if p.param_type_name == "option" and p.name and any(o.startswith("--") for o in p.opts)}


def in_flags(message: str, flags: dict[str, str]) -> str:
    """`message` with each backticked parameter that is an option of the command written as its flag."""
    return PARAMETER.sub(lambda match: flags.get(match.group(1), match.group(0)), message)
