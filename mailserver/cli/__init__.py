"""The ``mailserver`` administration command: ``main.py`` plus one module per noun."""
