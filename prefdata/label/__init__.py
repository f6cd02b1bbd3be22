"""Labellers: the position-debiased pairwise LLM judge (judge.py) and what it shares with the
others: rubrics and what a judge records (rubric.py), the requests (requests.py), reading
the answers (verdicts.py), the call runner and its one set of options, `JudgeOptions`
(runner.py), the cost estimate (estimate.py). Which pairs a judge sees from N candidates per
prompt (selection.py), rating candidates one at a time (pointwise.py), the budgeted knockout
tournament (tournament.py), constitutional critique and revision with a checked comparison
(constitution.py), synthetic pairs from a scorer (synthetic.py). Pooling the votes (orders,
panels) and measuring judges are in prefdata.quality (pooling.py, judge_eval.py). Rubric
templates live in rubrics/ (<name>.txt pairwise, <name>.pointwise.txt pointwise), the
default constitution in constitutions/."""
