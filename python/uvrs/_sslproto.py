"""The TLS state machine: asyncio's ``SSLProtocol``, with five fixes.

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
* application data that arrives after ``close()`` is discarded, as on a
  plain transport, instead of being delivered during the flush or failing
  the shutdown with "application data after close notify" (bpo-39951);
* callbacks the state machine schedules itself, and the app's
  ``pause_writing()``/``resume_writing()``, run in the connection's context
  (asyncio uses the context of whoever called ``write()``,
  ``resume_reading()`` or ``close()``);
* a peer's TCP EOF while the application paused reading closes the
  connection, where asyncio waits for a ``resume_reading()`` that may never
  come (the connection then hangs with no shutdown timeout armed).

For speed, the per-record work is native (src/transports/tls.rs), with
asyncio's semantics: the records readable now are decrypted into one
``bytes`` by ``_ssl_read_all`` (``_do_read__copied``); the write backlog is
encrypted and the outgoing records handed to the raw transport by
``_ssl_write`` (``_do_write``, ``_process_outgoing``); and on an open
connection a read (``buffer_updated``) and the TLS transport's ``write()``
are each one native call (``_ssl_data_in``, ``_ssl_app_write``) instead of
a dozen Python frames.

Python 3.10 keeps asyncio 3.10's older ``SSLProtocol`` unchanged.
"""

from __future__ import annotations

import contextvars
import ssl
import sys
from asyncio import sslproto

from ._uvrs import (
    _run_in_context,
    _ssl_app_write,
    _ssl_data_in,
    _ssl_read_all,
    _ssl_write,
    _ssl_writing_due,
)

if sys.version_info >= (3, 11):  # 3.10 uses asyncio's own SSLProtocol
    _State = sslproto.SSLProtocolState
    _AgainErrors = sslproto.SSLAgainErrors

    def _is_duck_buffered(protocol):
        return (
            not hasattr(protocol, "data_received")
            and hasattr(protocol, "get_buffer")
            and hasattr(protocol, "buffer_updated")
        )

    class _InContext:
        """The loop as SSLProtocol sees it: what it schedules (a resumed read,
        connection_lost, timeouts) runs in the connection's context, like
        every other protocol callback, not in whatever context happened to
        call resume_reading() or close() (asyncio's behaviour)."""

        __slots__ = ("_loop", "_context")

        def __init__(self, loop, context):
            self._loop = loop
            self._context = context

        def call_soon(self, callback, *args, context=None):
            return self._loop.call_soon(callback, *args, context=self._context)

        def call_later(self, delay, callback, *args, context=None):
            return self._loop.call_later(delay, callback, *args, context=self._context)

        def __getattr__(self, name):
            return getattr(self._loop, name)

    _WRAPPED = _State.WRAPPED

    class _SSLTransport(sslproto._SSLProtocolTransport):
        def write(self, data):
            protocol = self._ssl_protocol
            if not _ssl_app_write(protocol, data, _WRAPPED, _AgainErrors):
                protocol._write_appdata((data,))

    class SSLProtocol(sslproto.SSLProtocol):
        # True while _on_handshake_complete() runs: its _do_read() is deferred.
        _uvrs_defer_read = False
        # Shutdown started (close(), or the peer's close_notify).
        _uvrs_closing = False

        def __init__(self, loop, *args, **kwargs):
            super().__init__(_InContext(loop, contextvars.copy_context()), *args, **kwargs)

        def connection_made(self, transport):
            # One context per connection: the raw transport's (for TLS over
            # TLS, the outer TLS connection's).
            context = getattr(transport, "_context", None)
            if context is None:
                outer = getattr(getattr(transport, "_ssl_protocol", None), "_loop", None)
                context = getattr(outer, "_context", None)
            if context is not None:
                self._loop._context = context
            super().connection_made(transport)

        def _control_app_writing(self):
            # pause_writing()/resume_writing() of the app protocol run in the
            # connection's context, also when a write() from elsewhere (or a
            # set_write_buffer_limits()) crosses the mark. (The test is
            # asyncio's; the context is only entered when a call is due.)
            if _ssl_writing_due(self, self._get_write_buffer_size()):
                _run_in_context(self._loop._context, super()._control_app_writing)

        def _do_read__copied(self):
            # asyncio's loop, natively: the records are decrypted into one
            # bytes object (no join), without the read that only raises
            # SSLWantReadError; an empty read is the peer's close_notify.
            data, eof = _ssl_read_all(self._sslobj, self._incoming, _AgainErrors)
            if data is not None:
                self._app_protocol.data_received(data)
            if eof:
                self._call_eof_received()
                self._start_shutdown()

        def _get_app_transport(self):
            # asyncio's, creating the transport with the native write().
            if self._app_transport is None:
                if self._app_transport_created:
                    raise RuntimeError("Creating _SSLProtocolTransport twice")
                self._app_transport = _SSLTransport(self._loop, self)
                self._app_transport_created = True
            return self._app_transport

        def buffer_updated(self, nbytes):
            if not _ssl_data_in(self, nbytes, _WRAPPED, _AgainErrors):
                super().buffer_updated(nbytes)

        def _do_write(self):
            _ssl_write(self, _AgainErrors, True)

        def _process_outgoing(self):
            _ssl_write(self, _AgainErrors, False)

        def _start_shutdown(self):
            self._uvrs_closing = True
            super()._start_shutdown()

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
            if self._uvrs_closing and self._state == _State.FLUSHING:
                # Closing: what arrives now is not delivered (a plain
                # transport stops reading at close() too); writes still go.
                try:
                    self._discard_app_data()
                    if self._write_backlog:
                        self._do_write()
                    else:
                        self._process_outgoing()
                    self._control_ssl_reading()
                except Exception as ex:
                    self._fatal_error(ex, "Fatal error on SSL protocol")
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
