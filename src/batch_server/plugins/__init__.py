"""Plugins (pluggy): templates that turn records into requests, parsers that turn answers
into fields, renderers, exporters and ratings. A plugin imports what it needs from here::

    from batch_server.plugins import Template, hookimpl

See docs/plugins.md, :mod:`~batch_server.plugins.hookspecs` (the hooks),
:mod:`~batch_server.plugins.manager` (discovery, enable/disable, isolation) and
:mod:`~batch_server.plugins.states` (the only writer of ``plugin_states``)."""

from batch_server.plugins.hookspecs import hookimpl
from batch_server.plugins.types import Exporter, Rating, Template

__all__ = ["Exporter", "Rating", "Template", "hookimpl"]
