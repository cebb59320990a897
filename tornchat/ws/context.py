"""What a socket handler may use of the rest of the process.

The handler gets this small, typed bundle instead of the application object:
it parses frames, asks the service, and writes the answers, and the tree
shows that the socket layer sits above the service, never below it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tornchat.auth import TokenVerifier
from tornchat.config import Settings
from tornchat.contract.protocol import Limits
from tornchat.service import ChatService
from tornchat.ws.framewriter import FrameCache
from tornchat.ws.sessions import Sessions


@dataclass(frozen=True, slots=True)
class SocketContext:
    settings: Settings
    limits: Limits
    verifier: TokenVerifier
    service: ChatService
    sessions: Sessions
    #: shared by every handler of the process: one encoding per fan-out
    frames: FrameCache

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Browsers must come from an allowed Origin; same-host is always fine."""
        allowed = self.settings.allowed_origins
        origin = origin.rstrip("/")
        if "*" in allowed or origin in allowed:
            return True
        return origin.split("://", 1)[-1].lower() == host.lower()
