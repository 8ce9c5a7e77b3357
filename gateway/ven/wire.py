"""Text for openleadr's message templates, which do not escape what they are given.

openleadr renders its messages with Jinja2 without autoescaping, so an id a VTN chose with
``<``, ``&`` or a quote in it (all allowed in the 2.0b schema's ``xs:string``) went into the
VEN's ``oadrCreatedEvent`` as raw markup: the answer was not well-formed and the VTN's schema
check refused it. Every VTN-chosen text the gateway puts into a message goes through
:func:`escape` first.
"""

from __future__ import annotations

from xml.sax.saxutils import escape as _escape_markup

_QUOTES = {'"': "&quot;", "'": "&apos;"}


def escape(text: str) -> str:
    """``text`` as XML character data or attribute value: ``&``, ``<``, ``>`` and both quotes
    escaped."""
    return _escape_markup(text, _QUOTES)
