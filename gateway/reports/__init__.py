"""Reporting: queries over the rollups and views (``queries.py``, fetched by ``fetch.py``),
their rows as tables of plain values (``table.py``) or as pandas DataFrames (``frames.py``),
keeping the rollups up to date (``rollups.py``), grid carbon intensity (``carbon.py``), each
site's totals over all time (``summary.py``), and the renderings every report shares
(``formats.py``, ``plot.py``). The ``report`` and ``carbon`` commands are in
``gateway/commands/``."""
