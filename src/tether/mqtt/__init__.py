"""MQTT 3.1.1 and 5.0: the sans-I/O packet codec (`tether.mqtt.packets`)."""

__all__: list[str] = []
