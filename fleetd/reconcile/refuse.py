"""`Refuse`: an API request a pure planner turns down, with fleet's status and message.

The planners of API requests (`unit_put`, `inspection`) return it instead of raising the API's
own error (an aiohttp answer this layer may not import); the handler raises it as is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Refuse"]


@dataclass(frozen=True, slots=True)
class Refuse:
    """fleet's error answer: nothing changes."""

    code: int
    message: str
