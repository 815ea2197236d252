"""Clinical tasks, prompting and evaluation: ACES task configs and their labels,
zero-shot answers from generated timelines, few-shot probes on frozen patient
embeddings, and the evaluation report (`fedehr model evaluate`, `fedehr model ask`)."""
