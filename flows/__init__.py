import logging

# PREFECT_LOGGING_EXTRA_LOGGERS=flows (prefect.toml, and the deployments' job
# variables) gives this logger Prefect's API handler but leaves its level at the
# root's WARNING, which would drop the backends' INFO lines (promotions, step
# reuse) from the run's logs in the UI.
logging.getLogger(__name__).setLevel(logging.INFO)
