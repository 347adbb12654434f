"""systemd over D-Bus: the only code that knows D-Bus (dbus.py is the only dbus-fast importer)."""
