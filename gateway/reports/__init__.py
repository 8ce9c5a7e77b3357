"""Reporting: queries over the rollups and views (``queries.py``), keeping the rollups up to
date (``rollups.py``), grid carbon intensity (``carbon.py``), and the ``report`` command's
renderings."""
