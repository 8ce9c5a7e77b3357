"""The site agent on a Slurm cluster: its jobs are batch jobs (``docs/slurm.md``)."""
