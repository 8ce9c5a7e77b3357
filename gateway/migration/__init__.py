"""The job-move state machine, in one room.

A migration moves one job from a source site to a target site through
``planned -> target_reserved -> checkpointing -> transferring -> restoring -> completed``,
or ends ``aborted`` and cleaned up. The room holds:

- :mod:`gateway.migration.dispatch`: the :class:`~gateway.migration.dispatch.Dispatcher`,
  which drives each migration through its states, one writer per migration;
- :mod:`gateway.migration.store`: the migration as the dispatcher reads it and each of its
  transitions, one unit of work each;
- :mod:`gateway.migration.settle`: ambiguous answers of the sites settled by asking them;
- :mod:`gateway.migration.deadlines`: how long each step may take before it aborts;
- :mod:`gateway.migration.reconcile`: what to do with a migration found unfinished after a
  restart (the table ``RULES``);
- :mod:`gateway.migration.invariants`: the fleet invariants that job moves keep (one site at
  most, no job lost, reservations balance, no site over its GPUs).
"""
