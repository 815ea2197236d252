"""`fedehr ui`: the web page a clinician researcher opens next to the hospital's data.

Patients (a history as a timeline), Ask (a question about one patient, resolved,
confirmed, answered with its explanation), Cohort (the question over a list of
patients, downloadable in the MEDS label schema) and Model (the card, verified).
The app (app.py) is a thin shell over the clinical code (workspace.py).
"""
