"""`voice-runtime test`: conversation tests as files (``agents.d/tests/*.yaml``).

``cases`` reads and validates test files (errors at ``file:line:col``, like specs),
``scripted`` is the model a case's ``script`` puts in place of the LLM, ``run``
plays the cases through real sessions, ``report`` prints them (text, JSON, JUnit),
``suite`` and ``gate`` run them for ``serve --require-tests``.

May import: the rest of ``session`` and everything below it.
"""
