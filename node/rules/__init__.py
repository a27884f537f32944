"""The pure rules: consent, policy, minimization, safeguards, planning, the standardized interview.
No I/O.
"""
