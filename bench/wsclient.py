"""A minimal websocket client that timestamps each frame when its bytes arrive.

Hundreds of reviewer connections live in one benchmark process; a full client library parses, validates
and queues every frame before the benchmark sees it, and on a busy machine that queueing would be
measured as push latency. This protocol records ``time.perf_counter()`` in ``data_received`` (the first
moment user space sees the bytes) and parses afterwards. It speaks just enough RFC 6455 for the events
socket: the upgrade with a session cookie, unmasked server frames, text/ping/close, masked client frames.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable


class EventsSocket(asyncio.Protocol):
    def __init__(self, on_message: Callable[[dict, float], None]):
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        self.buffer += data
        if not self.upgraded.done():
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.buffer = rest
            self.upgraded.set_result(True)
        self._frames(arrived)

    def connection_lost(self, exc):
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(True)

    # --- frames -----------------------------------------------------------------------------------

    def _frames(self, arrived: float) -> None:
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            opcode, length, offset = first & 0x0F, second & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + length:
                return
            payload, self.buffer = self.buffer[offset : offset + length], self.buffer[offset + length :]
            if opcode == 0x1:
                self.on_message(json.loads(payload), arrived)
            elif opcode == 0x9:  # ping: answer pong, or the server closes us
                self.send(0xA, payload)
            elif opcode == 0x8:
                self.transport.close()

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(header + mask + masked)

    def send_json(self, value) -> None:
        self.send(0x1, json.dumps(value).encode())

    def close(self) -> None:
        if self.transport and not self.transport.is_closing():
            self.send(0x8, struct.pack("!H", 1000))
            self.transport.close()


async def connect(host: str, port: int, path: str, cookie: str, on_message) -> EventsSocket:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: EventsSocket(on_message), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
        f"Cookie: {cookie}\r\n\r\n"
    )
    protocol.transport.write(request.encode())
    await asyncio.wait_for(protocol.upgraded, timeout=30)
    return protocol
