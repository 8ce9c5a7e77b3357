"""The state store: SQLAlchemy 2 tables. Alembic (``migrations/``) owns the schema."""

from models.base import Base, UTCDateTime
from models.event import Event, EventInterval, EventResponse, EventSignal, EventTarget
from models.job import Job
from models.ledger import LedgerRow
from models.maintenance import WINDOW_SOURCES, AvailabilityWindow, WindowSource
from models.migration import FINAL_STATES, MIGRATION_STATES, Migration, MigrationState
from models.offer import Offer
from models.programme import ProgrammeRow
from models.rollup import CarbonIntensity, EnergyRollupDay, EnergyRollupHour
from models.site import Site, SiteSample
from models.ven import InboundRefusal, VenRegistration

__all__ = [
    "FINAL_STATES",
    "MIGRATION_STATES",
    "WINDOW_SOURCES",
    "AvailabilityWindow",
    "Base",
    "CarbonIntensity",
    "EnergyRollupDay",
    "EnergyRollupHour",
    "Event",
    "EventInterval",
    "EventResponse",
    "EventSignal",
    "EventTarget",
    "InboundRefusal",
    "Job",
    "LedgerRow",
    "Migration",
    "MigrationState",
    "Offer",
    "ProgrammeRow",
    "Site",
    "SiteSample",
    "UTCDateTime",
    "VenRegistration",
    "WindowSource",
]
