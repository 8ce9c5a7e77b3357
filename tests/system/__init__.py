"""Tests of whole processes: ``dr-gateway run`` and ``dr-gateway site-agent`` as OS processes
(SIGTERM, SIGKILL, restarts), real site agents running the example training job, the
dashboard in a headless browser."""
