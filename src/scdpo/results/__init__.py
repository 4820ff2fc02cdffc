"""Results: the accuracy table, its statistics and the report's pages, one module each.

Each module has pure functions (records in, DataFrame / text out; tested on constructed data) and
one `*_report` function that reads the workflow's files and writes a rule's outputs.
"""
