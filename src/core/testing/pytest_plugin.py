"""vmforge's pytest plugin (entry point ``pytest11``): the plugin-author kits.

Loaded by pytest in every environment where vmforge is installed, so it must
stay import-light and add nothing unless asked.
"""
