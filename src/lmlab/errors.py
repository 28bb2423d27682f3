"""The one error type users see.

`LmlabError` carries a one-line message that says what went wrong and what to do. The CLI prints
it and exits with code 2; library callers catch it as a `ValueError`. Nothing else lives here.
"""


class LmlabError(ValueError):
    """Bad input or an unusable file, with a message that says what to do."""
