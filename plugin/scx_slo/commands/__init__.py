"""One module per `scx-slo` subcommand."""
