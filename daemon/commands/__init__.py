"""One module per ``facedrop`` sub-command: a docstring, ``add_arguments`` and ``run``."""
