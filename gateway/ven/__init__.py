"""The VEN side of OpenADR 2.0b: one connection per VTN, its adapter and its event store.

``adapter`` turns openleadr's event dicts into :mod:`gateway.events` records, ``store``
persists them, ``client`` owns the openleadr client of one VTN.
"""
