"""The one error root. A HarnessError's str() is one line meant for the user: what is wrong and,
where there is one, the fix. Both command lines catch this type alone and print that line
(scicode_eval exits 2); anything else is a bug and keeps its traceback."""


class HarnessError(Exception):
    """Bad input, a missing or broken dependency (data, image, Docker, endpoint): the user's to fix."""


class UserError(HarnessError):
    """Bad input or environment found by the run itself; one line, exit 2, nothing generated."""
