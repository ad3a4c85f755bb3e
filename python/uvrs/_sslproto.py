"""The TLS state machine: asyncio's ``SSLProtocol``, with four fixes.

From Python 3.11 asyncio's ``sslproto`` is the design uvloop introduced (a
BufferedProtocol over the raw transport, MemoryBIOs, explicit states), and
uvrs drives it with its native transports. The subclass below changes it
where asyncio is known to misbehave and uvloop does not; each change is
listed in docs/compatibility.md and covered by uvloop's own TLS tests:

* a protocol with ``get_buffer()``/``buffer_updated()`` that does not inherit
  from ``BufferedProtocol`` is fed as a buffered protocol (as uvrs's plain
  transports do), where asyncio would call its missing ``data_received()``;
* the first application data after the handshake is delivered one loop
  iteration later, after the handshake waiter's callbacks, so that
  ``start_tls()`` callers hold the TLS transport before data arrives (else a
  reply written from ``data_received()`` goes out in clear text);
* application data that arrives after ``close()`` is discarded before
  ``unwrap()``, instead of failing the shutdown with
  "application data after close notify" (bpo-39951);
* a peer's TCP EOF while the application paused reading closes the
  connection, where asyncio waits for a ``resume_reading()`` that may never
  come (the connection then hangs with no shutdown timeout armed).

Python 3.10 keeps asyncio 3.10's older ``SSLProtocol`` unchanged.
"""

from __future__ import annotations

import ssl
import sys
from asyncio import sslproto

if sys.version_info >= (3, 11):  # 3.10 uses asyncio's own SSLProtocol
    _State = sslproto.SSLProtocolState
    _AgainErrors = sslproto.SSLAgainErrors

    def _is_duck_buffered(protocol):
        return (
            not hasattr(protocol, "data_received")
            and hasattr(protocol, "get_buffer")
            and hasattr(protocol, "buffer_updated")
        )

    class SSLProtocol(sslproto.SSLProtocol):
        # True while _on_handshake_complete() runs: its _do_read() is deferred.
        _uvrs_defer_read = False

        def _set_app_protocol(self, app_protocol):
            super()._set_app_protocol(app_protocol)
            if not self._app_protocol_is_buffer and _is_duck_buffered(app_protocol):
                self._app_protocol_get_buffer = app_protocol.get_buffer
                self._app_protocol_buffer_updated = app_protocol.buffer_updated
                self._app_protocol_is_buffer = True

        def _on_handshake_complete(self, handshake_exc):
            self._uvrs_defer_read = True
            try:
                super()._on_handshake_complete(handshake_exc)
            finally:
                self._uvrs_defer_read = False

        def _do_read(self):
            if self._uvrs_defer_read:
                # Queued after the waiter's done callbacks (see module docstring).
                self._loop.call_soon(self._do_read)
                return
            super()._do_read()

        def _do_shutdown(self):
            if not self._eof_received and self._sslobj is not None:
                self._discard_app_data()
            super()._do_shutdown()

        def _discard_app_data(self):
            """Drop decrypted application data nobody will read (we are closing)."""
            try:
                while self._sslobj.read(self.max_size):
                    pass
            except _AgainErrors:
                pass
            except ssl.SSLError:
                # A real TLS error: unwrap() will raise it again and report it.
                pass

        def eof_received(self):
            if self._state == _State.WRAPPED and self._app_reading_paused:
                # TCP EOF without close_notify while the app is paused: close,
                # as a reset would (uvloop does the same); no eof_received().
                self._eof_received = True
                self._set_state(_State.FLUSHING)
                self._set_state(_State.SHUTDOWN)
                self._on_shutdown_complete(None)
                return None
            return super().eof_received()
