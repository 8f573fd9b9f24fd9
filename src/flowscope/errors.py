"""The one exception hierarchy of flowscope.

The packet path never raises these out of its loop: decoders count problems by kind and exporter
(see ``metrics``); exceptions are for configuration and programming errors, and for callers that
ask for a single message to be decoded strictly.
"""

from __future__ import annotations


class FlowscopeError(Exception):
    """Root of every error flowscope raises on purpose."""


class ConfigError(FlowscopeError):
    """A configuration value is missing or invalid; the message names the key."""


class DecodeError(FlowscopeError):
    """An export message or set could not be decoded.

    Carries enough context to find the culprit: the kind of problem (a stable identifier used as
    a metric label), the exporter, the protocol version, the observation domain / source id and
    the template id where they are known.
    """

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        exporter: str = "",
        version: int | None = None,
        domain: int | None = None,
        template_id: int | None = None,
    ) -> None:
        self.kind = kind
        self.detail = detail
        self.exporter = exporter
        self.version = version
        self.domain = domain
        self.template_id = template_id
        where = [f"exporter={exporter}"] if exporter else []
        if version is not None:
            where.append(f"version={version}")
        if domain is not None:
            where.append(f"domain={domain}")
        if template_id is not None:
            where.append(f"template={template_id}")
        super().__init__(f"{kind}: {detail}" + (f" ({', '.join(where)})" if where else ""))
