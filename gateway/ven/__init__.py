"""The VEN side of OpenADR 2.0b: one connection per VTN, its adapter and its event store.

``client`` owns one VTN connection and its life cycle, composed of ``openleadr_client`` (the
openleadr client, screened at the edge by ``inbound`` and ``parsing``), ``ei_event`` (the
EiEvent exchange: ``distribution`` judges each distribution by ``event_rules``, ``answers``
stores the answers), ``ei_report`` (the reports), ``availability`` (EiOpt), ``registration``
(the venID across restarts), ``reconnect`` and ``tls``. ``adapter`` turns openleadr's event
dicts into :mod:`gateway.events` records and ``store`` persists them.
"""
