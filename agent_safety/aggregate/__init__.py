"""aggregate"""

#: Bootstrap resamples of the aggregate's intervals (``--bootstrap``); here, not in ``cli``, so the library
#: needs nothing of its command line and the command line imports no pandas to show it.
DEFAULT_BOOTSTRAP = 1000
