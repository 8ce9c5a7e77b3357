"""The hang guard of the test-side code.

The tests, the fuzzers and the benchmarks wait on real processes and servers (a server starting
or stopping, an answer, a training job finishing); each such wait is bounded by
:data:`HANG_GUARD_S`, so that a hang becomes a failure while a loaded machine is never mistaken
for one.
"""

from __future__ import annotations

HANG_GUARD_S = 120.0
"""Longest wait for a real process or server: to start or stop, to answer, to finish a job
[wall s]; never reached when things work."""
