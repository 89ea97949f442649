"""vmforge's compiled hot paths (Cython).

Ground floor of the house: nothing here imports the Python layers of
``vmforge``; policy (logging, errors with names, plugins) lives above.
"""
