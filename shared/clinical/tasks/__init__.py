"""ACES task configs (package data): in-hospital mortality, 30-day readmission, long
length of stay and ICU transfer. Dataset-agnostic; `fedehr.shared.clinical.predicates`
binds their predicate names to each dataset's codes."""
