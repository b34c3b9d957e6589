"""`lightning-cv report`: one static HTML page of a fit or CV run (header, scores, curves, decisions, the
tasks' sections) from its template. May import every subpackage but `cli`.
"""
