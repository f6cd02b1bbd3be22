"""Labellers: the position-debiased pairwise LLM judge (judge.py), judge panels and
calibration against human labels (panel.py), constitutional critique and revision with a
checked comparison (constitution.py). Rubric templates live in rubrics/, the default
constitution in constitutions/."""
