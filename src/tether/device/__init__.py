"""The device runtime: an app, its configuration, the built-in services and every channel.

``tether run APP_DIR`` starts `tether.device.supervisor`, which runs the device
process (``python -m tether.device``, `tether.device.runtime.Runtime`) and starts it
again after ``Sys.Reboot`` or a crash. An app's ``init(device)`` gets a
`tether.device.app.Device`. See docs/device.md.
"""
