"""Reporting: queries over the rollups and views (``queries.py``), keeping the rollups up to
date (``rollups.py``), grid carbon intensity (``carbon.py``), each site's totals over all time
(``summary.py``), and the renderings every report shares (``formats.py``, ``plot.py``). The
``report`` and ``carbon`` commands are in ``gateway/commands/``."""
