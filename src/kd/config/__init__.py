"""Run configuration: the settings (kd.config.settings) and where they come from (kd.config.sources)."""
