"""Site maintenance windows: from the configuration or the CLI, stored, sent to the VTN as
availability schedules (EiOpt), and read by the planner (a site in maintenance takes part in
no event and takes no job)."""
