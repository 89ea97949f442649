"""An example hooks plugin for vmforge (see ``eventlog``)."""
