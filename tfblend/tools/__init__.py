"""Maintenance tools: ``python -m tfblend.tools.<name>`` (``check_readme``, ``api_docs``)."""
