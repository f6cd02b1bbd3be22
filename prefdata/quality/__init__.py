"""Data quality: agreement, consensus, mislabel audit, confidence filtering, dedup, bias.

One score convention everywhere: 0-1, lower is worse; issue tables follow the `issues`
contract (item_id, issue, score, is_issue, reason).
"""
