"""The application: the recovery ladder, the journal, reports, the CLI and the touchscreen UI."""
