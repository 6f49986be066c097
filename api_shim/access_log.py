"""The shim's gunicorn logger: the access line in the shim's format, without the atoms it does not use.

gunicorn builds every atom it offers for each access line: one per request header, per response header and per
environ variable, each key lowercased and formatted, then a copy that escapes quotes. For a predict that was
about a tenth of a shim worker's CPU (py-spy, bench/levers.md). The line here is the same, quotes escaped the same
way; a format an operator changes goes back to gunicorn's way. (With a logger class of its own, gunicorn does not
switch to its statsd logger when `--statsd-host` is given: the shim's metrics are Prometheus's, at /metrics.)
"""

from __future__ import annotations

import traceback
from typing import Any

from gunicorn.glogging import Logger

ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'  # client, request line, status, bytes sent, milliseconds


class ShimLogger(Logger):
    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        atoms = {
            # Quotes escaped as gunicorn's SafeAtoms does: a request line cannot close the quotes around it.
            "h": environ.get("REMOTE_ADDR", "-").replace('"', '\\"'),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}".replace('"', '\\"'),
            "s": status,
            "b": "-" if sent is None else str(sent),
            "M": request_time.seconds * 1000 + int(request_time.microseconds / 1000),
        }
        try:
            self.access_log.info(ACCESS_LOG_FORMAT, atoms)
        except Exception:
            self.error(traceback.format_exc())
