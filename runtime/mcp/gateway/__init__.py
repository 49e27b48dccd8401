"""serve's warm MCP connections, lent to its job processes over a unix socket: the wire
protocol (``wire``), serve's side (``server``: ``Gateway``) and the job's side
(``client``: ``GatewayPool``). ``server``'s docstring tells why and how."""

from __future__ import annotations

from .client import GatewayPool as GatewayPool
from .client import GatewayRefused as GatewayRefused
from .client import RemoteConnection as RemoteConnection
from .server import Gateway as Gateway
from .wire import ADDRESS_FILE as ADDRESS_FILE
from .wire import Status as Status
