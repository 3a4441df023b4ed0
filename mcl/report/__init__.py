"""The generated reports: one function per section, figures apart."""
