"""Files in and out: workspace files (atomic), uploads (checked), weight validation."""
