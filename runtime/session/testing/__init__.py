"""`voice-runtime test`: conversation tests as files (``agents.d/tests/*.yaml``).

``files`` reads and validates test files (errors at ``file:line:col``, like specs),
``scripted`` is the model a case's ``script`` puts in place of the LLM, ``run``
plays the cases through real sessions, ``report`` prints them (text, JSON, JUnit).
"""
