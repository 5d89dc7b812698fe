"""Logged models (`classifier`, the files in them `files`, the pyfunc `letter_model`) and the
registry of a team's versions and aliases (`registry`)."""
