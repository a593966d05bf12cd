"""The `kiosk` subcommands, one module per group; `common` has what they share."""
