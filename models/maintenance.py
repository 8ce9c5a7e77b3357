"""Site maintenance windows and the availability schedules (EiOpt) that tell the VTN of them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

WindowSource = Literal["config", "cli"]
WINDOW_SOURCES: tuple[WindowSource, ...] = ("config", "cli")


class AvailabilityWindow(Base):
    """A span in which a site takes part in no event and takes no job, and the opt that tells
    its VTN (an ``oadrCreateOpt`` with an optOut availability schedule).

    A window is sent once: ``sent_at`` is set when the VTN answered, whatever its code; a
    window the VTN did not answer is sent again with the same ``opt_id``. Removing a window
    sets ``cancelled_at``; an acknowledged one is then cancelled with ``oadrCancelOpt``.
    """

    __tablename__ = "availability_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    """The operator's words, e.g. "maintenance"; kept here (the opt carries an enumerated
    reason only)."""
    source: Mapped[str] = mapped_column(String(16))
    """``config`` (a ``[[maintenance]]`` entry: the configuration owns it) or ``cli``."""
    opt_id: Mapped[str] = mapped_column(String(64), unique=True)
    """The optID of the availability schedule, fixed at creation so that a resend is the
    same opt for the VTN."""
    created_at: Mapped[datetime]
    vtn_id: Mapped[str | None] = mapped_column(String(64))
    """Our id of the VTN the opt went to (``[[vtn]] id``); None until sent."""
    sent_at: Mapped[datetime | None]
    """When the VTN answered the oadrCreateOpt; None while unsent (a site no VTN serves,
    or a VTN that did not answer yet)."""
    response_code: Mapped[int | None] = mapped_column(Integer)
    """The VTN's response code to the oadrCreateOpt: 200 acknowledged, other codes refused."""
    response_description: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    """Why the last attempt to send the opt or its cancellation got no answer; None after
    an answer."""
    cancelled_at: Mapped[datetime | None]
    """When the window was removed (``maintenance remove`` or gone from the configuration)."""
    cancel_sent_at: Mapped[datetime | None]
    """When the VTN answered the oadrCancelOpt."""
    cancel_response_code: Mapped[int | None] = mapped_column(Integer)
