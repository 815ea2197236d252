"""MEDS data access at the site: schema, reading, writing, validation, ETLs."""
