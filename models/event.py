"""OpenADR events, one row per (VTN, event id, modification number), and the answers sent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base


class Event(Base):
    """One version of an event as a VTN distributed it."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("vtn_id", "event_id", "modification_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vtn_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    modification_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    """far | near | active | completed | cancelled | none (the VTN's word)."""
    market_context: Mapped[str] = mapped_column(String(512))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    test_event: Mapped[bool] = mapped_column(Boolean, default=False)
    response_required: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    """0 means open-ended."""
    ramp_up_s: Mapped[float | None] = mapped_column(Float)
    start_after_s: Mapped[float | None] = mapped_column(Float)
    """tolerance.startafter: the randomisation window of the start [s]."""
    created_at: Mapped[datetime | None]
    """When the VTN created this version."""
    received_at: Mapped[datetime]
    ven_id: Mapped[str | None] = mapped_column(String(128))
    """The VEN id this version was distributed to (for targets naming a VEN)."""
    start_offset_s: Mapped[float | None] = mapped_column(Float)
    """The random delay within ``start_after_s`` this VEN applies to the start [s]."""
    cancel_effective_at: Mapped[datetime | None]
    """Of a cancelled version (or one implied cancelled): when this VEN stops acting on the
    event, its receipt plus a random delay within ``start_after_s``."""
    implied_cancel_at: Mapped[datetime | None]
    """When a distribution from the VTN left out this (not yet ended) event."""

    signals: Mapped[list[EventSignal]] = relationship(
        back_populates="event", cascade="all, delete-orphan", order_by="EventSignal.position"
    )
    targets: Mapped[list[EventTarget]] = relationship(
        back_populates="event", cascade="all, delete-orphan"
    )
    responses: Mapped[list[EventResponse]] = relationship(
        back_populates="event", cascade="all, delete-orphan", order_by="EventResponse.id"
    )


class EventTarget(Base):
    """Whom an event addresses: ``kind`` is resource_id, ven_id, group_id, party_id, ..."""

    __tablename__ = "event_targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_pk: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(128))

    event: Mapped[Event] = relationship(back_populates="targets")


class EventSignal(Base):
    __tablename__ = "event_signals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_pk: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    signal_id: Mapped[str] = mapped_column(String(128))
    signal_name: Mapped[str] = mapped_column(String(64))
    signal_type: Mapped[str] = mapped_column(String(32))
    units: Mapped[str | None] = mapped_column(String(32))

    event: Mapped[Event] = relationship(back_populates="signals")
    intervals: Mapped[list[EventInterval]] = relationship(
        back_populates="signal", cascade="all, delete-orphan", order_by="EventInterval.position"
    )


class EventInterval(Base):
    """One interval of a signal; its start is the event's start plus earlier durations."""

    __tablename__ = "event_intervals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    signal_pk: Mapped[int] = mapped_column(
        ForeignKey("event_signals.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    uid: Mapped[str | None] = mapped_column(String(128))
    """``xcal:uid`` as the VTN sent it: text in the 2.0b schema (revision 0009)."""
    duration_s: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)

    signal: Mapped[EventSignal] = relationship(back_populates="intervals")


class EventResponse(Base):
    """An opt answer the gateway gave to one version of an event, with its reason."""

    __tablename__ = "event_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_pk: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    opt: Mapped[str] = mapped_column(String(8))
    """optIn | optOut."""
    reason: Mapped[str] = mapped_column(Text)
    response_code: Mapped[int] = mapped_column(Integer, default=200)
    responded_at: Mapped[datetime]
    required: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """False when the event said response_required = never: the answer is not sent."""
    sent_at: Mapped[datetime | None]
    """When the VTN acknowledged the oadrCreatedEvent carrying this answer; None if unsent."""
    request_id: Mapped[str | None] = mapped_column(String(128))
    """The requestID of the oadrDistributeEvent this answer answers (conformance rule 42);
    None for answers stored before revision 0007."""
    predicted_kw: Mapped[float | None] = mapped_column(Float)
    """The planner's predicted deliverable power at the facility meter when it answered [kW];
    None when it predicted none."""

    event: Mapped[Event] = relationship(back_populates="responses")
