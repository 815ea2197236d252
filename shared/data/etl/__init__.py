"""ETLs: each module converts one source format into a MEDS dataset."""
