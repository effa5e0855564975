"""The built-in RPC services of a device: Sys, Config, FS, OTA (spec mgos-rpc.md §3, §5.3, §6)."""
