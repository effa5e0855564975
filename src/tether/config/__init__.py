"""Schema-driven configuration with levels, as Mongoose OS has it (spec mgos-rpc.md §5).

Make the schema, then the configuration, and load it::

    schema = tether.config.Schema.standard()
    schema.extend(manifest["config_schema"])      # mos.yml entries, later wins
    config = tether.config.Config(schema, state_dir, mac="240AC40A1B2C")
    for problem in config.load():                 # conf1..9.json; bad files are moved aside
        print(problem)
    config["debug.level"]                         # 2
    config.set({"debug": {"level": 3}})           # ["debug.level"]
    config.save()                                 # conf9.json holds {"debug": {"level": 3}}

`Schema` reads ``config_schema`` entries; `Config` holds the levels (0 defaults,
1-8 vendor, 9 user), applies ``conf_acl``, converts and checks values with mgos'
messages, redacts secrets and writes level files atomically. Every error is a
`ConfigError` naming the dotted key; `UnknownKey` is the one for a key the schema
lacks. The ``Config.*`` RPC service is `tether.device.services.config`.
"""

from __future__ import annotations

from tether.config.levels import Config, check_access, expand_placeholders
from tether.config.schema import REDACTED, Leaf, Schema, UnknownKey
from tether.errors import ConfigError

__all__ = [
    "REDACTED",
    "Config",
    "ConfigError",
    "Leaf",
    "Schema",
    "UnknownKey",
    "check_access",
    "expand_placeholders",
]
