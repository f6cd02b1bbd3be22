"""Labellers: the position-debiased pairwise LLM judge (judge.py), which pairs it sees from N
candidates per prompt (selection.py), rating candidates one at a time (pointwise.py), the
budgeted knockout tournament (tournament.py), judge panels and calibration against human
labels (panel.py), constitutional critique and revision with a checked comparison
(constitution.py). Rubric templates live in rubrics/ (<name>.txt pairwise,
<name>.pointwise.txt pointwise), the default constitution in constitutions/."""
