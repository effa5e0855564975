"""The built-in RPC services of a device: Sys, Config, FS (spec mgos-rpc.md §3, §5.3)."""
